"""Tasks: what a run learns and how it is scored. One folder per task (classify/, sr/): its
card in the folder's __init__.py (harness/tasks/base.py: torch-free metadata), its torch side
in runtime.py (harness/tasks/runtime.py: data, loss, evaluation), its datasets and networks
beside them. harness/tasks/models.py holds what every task's networks share (the registry
entry and the quantization policy)."""
