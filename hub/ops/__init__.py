"""Operations on a deployed hub: backup and restore of its database (`etp db backup|restore`)
and the deployment check (`etp doctor`)."""

from hub.ops.backup import (
    COUNTED_TABLES,
    BackupError,
    BackupSummary,
    RestoreRefusedError,
    RestoreSummary,
    backup_database,
    inspect_backup,
    restore_database,
)

__all__ = [
    "COUNTED_TABLES",
    "BackupError",
    "BackupSummary",
    "RestoreRefusedError",
    "RestoreSummary",
    "backup_database",
    "inspect_backup",
    "restore_database",
]
