/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: the storage behind one disk.
 *
 * A backend is the open file, block device or NBD connection of one
 * disk.  The registry (disks.c) creates and destroys backends; the
 * nbdkit callbacks (qmpdisk.c) call the data operations directly.
 *
 * Data operations take nbdkit's request flags (NBDKIT_FLAG_*), may be
 * called from any number of threads at once, report failures with
 * nbdkit_error and nbdkit_set_error and return -1.  Capabilities are
 * fixed when the backend is opened and never change afterwards.
 *
 * Opening, open_rw and resize fail by returning NULL or -1 after
 * setting *err (common/qmp/qmp.h) to a message worded like QEMU's.
 */
#ifndef QMPDISK_BACKEND_H
#define QMPDISK_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

struct nbdkit_extents;
struct qmp_error;
struct stat;
struct backend;

struct backend_ops {
  int (*pread) (struct backend *b, void *buf, uint32_t count,
                uint64_t offset);
  int (*pwrite) (struct backend *b, const void *buf, uint32_t count,
                 uint64_t offset, uint32_t flags);
  /* Fails with ENOTSUP when the backend cannot zero efficiently, so
   * that nbdkit falls back to writing zeroes (or fails a fast zero).
   */
  int (*zero) (struct backend *b, uint32_t count, uint64_t offset,
               uint32_t flags);
  int (*trim) (struct backend *b, uint32_t count, uint64_t offset,
               uint32_t flags);
  int (*flush) (struct backend *b);
  int (*extents) (struct backend *b, uint32_t count, uint64_t offset,
                  uint32_t flags, struct nbdkit_extents *extents);
  int (*cache) (struct backend *b, uint32_t count, uint64_t offset);

  /* Management, called by disks.c only.  open_rw makes the backend
   * writable (idempotent, thread-safe; on failure errno is set too);
   * resize changes the size; both return -1 after setting *err.
   */
  int (*open_rw) (struct backend *b, struct qmp_error *err);
  int (*resize) (struct backend *b, uint64_t size, struct qmp_error *err);
  /* Optional: cut a network connection now, without waiting and
   * without freeing anything (operations fail from then on); close
   * still follows.  Async with the data operations.
   */
  void (*disconnect) (struct backend *b);
  /* Optional: fstat of the open file or block device (0, or -1 with
   * errno), for the disk's identity (common/qmp/peer.h).
   */
  int (*identify) (struct backend *b, struct stat *st);
  void (*close) (struct backend *b);
};

/* Every backend type embeds this as its first member. */
struct backend {
  const struct backend_ops *ops;
  const char *driver;           /* actual kind: file, host_device, nbd */
  uint64_t size;                /* size when opened */
  bool can_flush;
  bool can_trim;
  bool can_fua;                 /* natively or by flushing after */
  bool can_cache;
  uint32_t block_min, block_pref, block_max; /* 0 = no constraints */
};

/* Opens a regular file or a block device.  With defer_rw the file
 * is opened read-only now and for writing by the first open_rw;
 * otherwise a writable disk is opened O_RDWR at once.
 */
extern struct backend *file_backend_open (const char *path,
                                          bool readonly, bool defer_rw,
                                          struct qmp_error *err);

/* Connects to an NBD URI with libnbd; refuses this nbdkit's own
 * server.  nbd_backend_init records our pid before nbdkit forks.
 */
extern void nbd_backend_init (void);
/* Connecting and the handshake must finish within this (seconds). */
#define NBD_CONNECT_TIMEOUT_DEFAULT 10
extern void nbd_backend_set_timeout (unsigned seconds);
extern struct backend *nbd_backend_open (const char *uri, bool readonly,
                                         struct qmp_error *err);

#endif /* QMPDISK_BACKEND_H */
