/* Between backup.c and backup-commands.c only. */
#ifndef CHECKPOINT_BACKUP_INTERNAL_H
#define CHECKPOINT_BACKUP_INTERNAL_H

#include "backup.h"

extern int backup_disk_init (struct backup *b, struct backup_disk *bd,
                             struct node *n, const char *export,
                             struct qmp_error *err);
extern bool backup_export_taken (const char *name);
extern void backup_hold_base (struct backup *b, int delta);
extern void backup_link (struct backup *b);
extern void backup_unlink (struct backup *b);
extern void backup_retire (struct backup *b);
extern void backup_free (struct backup *b);

#endif /* CHECKPOINT_BACKUP_INTERNAL_H */
