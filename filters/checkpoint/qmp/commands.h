/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The filter's QMP commands, one file per family, each registering its
 * table (and its transaction actions) with the monitor.
 */
#ifndef CHECKPOINT_QMP_COMMANDS_H
#define CHECKPOINT_QMP_COMMANDS_H

#include "peer.h"

extern void bitmap_commands_register (void);
extern void checkpoint_commands_register (void);
extern void backup_commands_register (void);
extern void transaction_commands_register (void);
extern void job_commands_register (void);
/* At start-up, once the nodes are there: delete each pending
 * checkpoint (its backup died with an earlier process), as
 * backup-end success=false would; the log says which.
 */
extern void backup_commands_drop_pending (void);
/* DISKS: the qmpdisk plugin's services, or NULL over another plugin
 * (then the filter lists its own node).
 */
extern void node_commands_register (const struct qmp_disk_services *disks);

#endif /* CHECKPOINT_QMP_COMMANDS_H */
