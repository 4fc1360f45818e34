"""Training: courses for trainers (docs/training.md).

The hub-managed ``visa-training`` service: courses (YAML in ``hub_config/`` and pages), their
participants (facility accounts and time-limited GUEST seats), the class started in one click from a
warm pool, the trainer's grid of live desktops, broadcasts, and the course's end.
"""
