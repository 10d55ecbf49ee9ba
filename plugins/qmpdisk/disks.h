/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: the registry of disks.
 *
 * Every disk has a node name (also its NBD export name), a target (a
 * file or block device path, or an NBD URI), a driver and a backend
 * that does the I/O.  Disks come from disk= on the command line and
 * from the QMP monitor at run time, while NBD connections open and use
 * them in parallel.
 *
 * Locking.  One mutex, disks_lock (in disks.c), protects the list and
 * each disk's reference count, connection count and size.  Lock order:
 * locks of the caller (e.g. the QMP monitor's) -> disks_lock -> the
 * backends' internal locks (disks_resize resizes under disks_lock;
 * nothing else does I/O under it).  disks_lock is never held while
 * calling back out of the registry, except for the fn of
 * disks_foreach, which therefore must not call disks_* nor take a
 * lock that is held around a call to disks_*.  The disk_* accessors
 * take no lock and may be called anywhere, including from that fn.
 * The data path (the backend's ops) takes no registry lock at all.
 *
 * Lifetime.  A struct disk is reference counted: the registry holds
 * one reference while the disk is listed, disks_get and disks_open
 * take one each.  A removed disk stays valid until its last reference
 * is dropped, then its backend is closed.
 *
 * Errors.  Functions with a struct qmp_error *err parameter return -1
 * (or NULL) after setting *err (common/qmp/qmp.h) to a human-readable
 * message worded like QEMU's, unless an error is set there already;
 * its desc is NULL if even that allocation failed.  The caller owns
 * *err and clears it.
 */
#ifndef QMPDISK_DISKS_H
#define QMPDISK_DISKS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"

struct disk;

/* Longest valid node name, as in QEMU. */
#define DISK_NODE_NAME_MAX 31

/* Adds a disk, in two steps, so that the slow one (connecting to an
 * NBD server) can run without the caller's locks: disks_prepare checks
 * the name and opens the target, returning a disk that nobody can find
 * yet; disks_insert lists it, unless the name was taken meanwhile or
 * nbdkit is shutting down, in which case it closes and frees the disk
 * and fails.  driver "file": a regular file (a block device is
 * accepted too, as QEMU does); "host_device": a block device; "nbd":
 * an NBD URI (nbd://, nbd+unix://, ...) opened with libnbd.  Unless
 * readonly, the target is opened for writing at once.
 */
extern struct disk *disks_prepare (const char *node, const char *driver,
                                   const char *target, bool readonly,
                                   struct qmp_error *err);
extern int disks_insert (struct disk *d, struct qmp_error *err);

/* Adds a file or block device given by disk=NODE:PATH.  PATH is opened
 * for writing only when the first writable connection opens the disk,
 * so that "nbdkit -r" never opens it for writing.
 */
extern int disks_add_from_cmdline (const char *node, const char *path,
                                   struct qmp_error *err);

/* Removes a disk from the registry; refused while connections have it
 * open.
 */
extern int disks_remove (const char *node, struct qmp_error *err);

/* Changes a disk's size (ftruncate for files).  Block devices, NBD
 * disks and read-only disks accept only their current size.  A disk
 * with open connections may grow but not shrink: those connections
 * keep the size they saw, and the data path refuses requests past
 * the current size anyway.  Connections opened afterwards see the
 * new size.
 */
extern int disks_resize (const char *node, uint64_t size,
                         struct qmp_error *err);

/* Looks a disk up by node name, "" meaning the first disk, and takes a
 * reference.  NULL if there is no such disk.
 */
extern struct disk *disks_get (const char *name);
extern void disks_put (struct disk *d);

/* Calls fn for every listed disk in order of addition, holding
 * disks_lock (see above).
 */
extern void disks_foreach (void (*fn) (struct disk *d, void *opaque),
                           void *opaque);

extern size_t disks_count (void);

/* nbdkit is shutting down: cut the connections of nbd disks (so
 * that a server holding a connection to us can finish too) and
 * refuse further disks.
 */
extern void disks_disconnect_remote (void);

/* Drops the registry's references to all disks. */
extern void disks_cleanup (void);

/* For NBD connections: like disks_get, but also counts the connection
 * (which blocks disks_remove and shrinking) and, unless *readonly, makes the backend
 * writable; if the target may not be written (EACCES, EPERM, EROFS)
 * the connection is made read-only by setting *readonly instead.
 * Errors go to nbdkit_error.  disks_close undoes it.
 */
extern struct disk *disks_open (const char *name, bool *readonly);
extern void disks_close (struct disk *d);

/* Accessors.  The strings live as long as the disk. */
extern const char *disk_node (const struct disk *d);
extern const char *disk_path (const struct disk *d);   /* path or URI */
extern const char *disk_driver (const struct disk *d); /* actual kind */
extern bool disk_readonly (const struct disk *d);
extern uint64_t disk_size (const struct disk *d);
extern struct backend *disk_backend (const struct disk *d);

#endif /* QMPDISK_DISKS_H */
