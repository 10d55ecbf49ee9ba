/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Durable files in the state directory (state=DIR): checkpoint
 * metadata and bitmaps.  Every file is replaced atomically and carries
 * checksums, so after a crash or power loss a reader sees either the
 * old or the new contents, and anything else is reported as corrupt.
 *
 * File layout (all integers little-endian), STATE_HEADER_SIZE bytes of
 * header then the payload:
 *
 *   0  magic "NBDKCKPT"                        8 bytes
 *   8  format version (STATE_VERSION)          u32
 *  12  kind, chosen by the caller              u32
 *  16  payload length                          u64
 *  24  SHA-256 of the payload                  32 bytes
 *  56  first 8 bytes of SHA-256 of bytes 0-55  8 bytes
 *
 * Magic and version stay at these offsets in every future version, so
 * that a newer file is told apart from a corrupt one.
 *
 * NAME arguments are plain file names: 1 to STATE_NAME_MAX bytes, no
 * '/', not starting with '.' (dot files are reserved for temporary
 * files).  Anything else fails with EINVAL.
 *
 * All functions are thread-safe, print nothing and report errors
 * through errno.
 */
#ifndef NC_STATE_H
#define NC_STATE_H

#include <stddef.h>
#include <stdint.h>

#define STATE_MAGIC "NBDKCKPT"
#define STATE_VERSION 1
#define STATE_HEADER_SIZE 64
#define STATE_NAME_MAX 200
#define STATE_MAX_PAYLOAD ((uint64_t) 1 << 30)

/* Create directory PATH (mode 0700) unless it exists, then check that
 * it is a writable directory.  Only the last component is created.
 * Returns 0, or -1 with errno (ENOTDIR, EACCES, ...).
 */
extern int state_dir_open (const char *path);

/* Atomically replace DIR/NAME with a file of type KIND holding LEN
 * bytes of PAYLOAD, durably (written to a temporary file, fsync'd,
 * renamed, directory fsync'd).  Returns 0, or -1 with errno from the
 * failing call (ENOSPC, EIO, EFBIG if LEN > STATE_MAX_PAYLOAD ...); the
 * old file is then untouched and no temporary file is left, except when
 * only the final directory fsync fails: NAME may then hold the old or
 * the new contents, both valid.
 */
extern int state_write (const char *dir, const char *name, uint32_t kind,
                        const void *payload, size_t len);

/* Like state_write.  With STATE_NO_SYNC the replacement is still
 * atomic (a reader sees the old or the new file, never a mix) but not
 * durable: after a power loss or kernel crash either may be there.  For
 * files whose loss is harmless, to spare two fsyncs.
 */
#define STATE_NO_SYNC 1
extern int state_write_flags (const char *dir, const char *name,
                              uint32_t kind, const void *payload,
                              size_t len, unsigned flags);

/* Read DIR/NAME, which must be of type KIND.  Returns 0 and sets
 * *PAYLOAD (malloc'ed, to be freed by the caller; never NULL) and *LEN.
 * Returns -1 with errno ENOENT if the file is missing, EBADMSG if it is
 * corrupt, truncated or of another kind, EPROTO if it was written by an
 * unknown format version, EISDIR if it is a directory (anything else
 * that is not a regular file is EBADMSG), EFBIG if the payload is over
 * STATE_MAX_PAYLOAD, or the error of a failing system call.
 */
extern int state_read (const char *dir, const char *name, uint32_t kind,
                       void **payload, size_t *len);

/* Durably remove DIR/NAME.  A missing file is not an error. */
extern int state_remove (const char *dir, const char *name);

/* List the regular files of DIR whose names end with SUFFIX (NULL or ""
 * for all), skipping temporary files, sorted by name.  Sets *NAMES to a
 * malloc'ed array of *N malloc'ed strings; free it with
 * state_list_free.  Returns 0 or -1 with errno.
 */
extern int state_list (const char *dir, const char *suffix,
                       char ***names, size_t *n);
extern void state_list_free (char **names, size_t n);

/* Remove temporary files left in DIR by a crash during state_write.
 * Call it at start-up, before this process writes any state: it would
 * also remove the temporary files of writes in progress.
 */
extern void state_remove_temps (const char *dir);

/* Copy the kernel's boot id (changes at every boot) into OUT as a
 * string without the trailing newline.  Returns 0 or -1 with errno.
 */
extern int state_boot_id (char out[64]);

#endif /* NC_STATE_H */
