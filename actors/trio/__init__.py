"""The trio half of the core: the tasks that own the machines' state, their inboxes, their
deadlines and their supervision. Only here does the core wait, sleep or start tasks."""
