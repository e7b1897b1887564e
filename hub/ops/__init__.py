"""Operations on a deployed hub: backup and restore of its database (`etp db backup|restore`,
backup.py) and the deployment check (`etp doctor`, doctor.py)."""
