#!/usr/bin/env bash
# Install the Debian packages the local SLURM test cluster, the data tests and the report's
# LaTeX test (pdflatex with booktabs: texlive-latex-base, texlive-latex-recommended) and the
# figure test (pdffonts: poppler-utils) need,
# when missing. Idempotent; a no-op when everything is present. Needs root and apt-get.
set -euo pipefail
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server dataset-fashion-mnist
      texlive-latex-base texlive-latex-recommended poppler-utils)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "slurm/install.sh: missing Debian packages ${missing[*]}; install them as root" \
       "(the SLURM, LaTeX and figure-font tests will be skipped)" >&2
  exit 0
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
