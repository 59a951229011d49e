"""`spotart audit`: measure that every pretext task is shortcut-free.

For each low-level cue that could solve a task (edge continuity, chromatic aberration, colour
statistics, low-frequency position, the autoencoder's blur, seams along damage or holes), a
deliberately weak cheater sees only that cue's features of the task's own pipeline and is
trained on the task's own labels, once with the countermeasures on and once with each relevant
one off. Modules: cues (features), cheaters (weak classifiers, jigsaw decoding), probes (what
each task audits), generators (real vs generated images of a run), runner, report.
"""

from .config import AuditConfig
from .runner import audit

__all__ = ["AuditConfig", "audit"]
