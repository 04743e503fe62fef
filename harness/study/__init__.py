"""Many runs: study specs, sweeps and job backends."""
