/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <libgen.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "cleanup.h"
#include "byteorder.h"
#include "rounding.h"
#include "state.h"
#include "state-private.h"

#define SHA256_LEN 32
#define HDR_SUM_OFFSET 56       /* header checksum covers bytes before */
#define TEMP_INFIX ".tmp."

static void
cleanup_closedir (DIR **d)
{
  int saved = errno;

  if (*d)
    closedir (*d);
  errno = saved;
}
#define CLEANUP_CLOSEDIR __attribute__ ((cleanup (cleanup_closedir)))


static int
sha256 (const void *data, size_t len, uint8_t out[SHA256_LEN])
{
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, len ? data : "", len, out) < 0) {
    errno = EIO;
    return -1;
  }
  return 0;
}

/* Names are plain file names; dot files are our temporary files. */
static bool
valid_name (const char *name)
{
  size_t n = strlen (name);

  return n > 0 && n <= STATE_NAME_MAX && name[0] != '.' &&
    strchr (name, '/') == NULL;
}

static int
check_name (const char *name)
{
  if (!valid_name (name)) {
    errno = EINVAL;
    return -1;
  }
  return 0;
}

static bool
is_temp_name (const char *name)
{
  return name[0] == '.' && strstr (name, TEMP_INFIX) != NULL;
}

static int
open_dir (const char *dir)
{
  return open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Loops over short writes and EINTR. */
static int
write_full (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  ssize_t r;

  while (len > 0) {
    r = write (fd, p, len);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

/* Reads exactly LEN bytes; an early end of file means the file is
 * truncated.
 */
static int
read_full (int fd, void *buf, size_t len)
{
  char *p = buf;
  ssize_t r;

  while (len > 0) {
    r = read (fd, p, len);
    if (r == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (r == 0) {
      errno = EBADMSG;
      return -1;
    }
    p += r;
    len -= r;
  }
  return 0;
}

static int
encode_header (uint8_t hdr[STATE_HEADER_SIZE], uint32_t kind,
               const void *payload, size_t len)
{
  uint8_t sum[SHA256_LEN];

  memcpy (hdr, STATE_MAGIC, 8);
  le_store (hdr + 8, STATE_VERSION, 4);
  le_store (hdr + 12, kind, 4);
  le_store (hdr + 16, len, 8);
  if (sha256 (payload, len, hdr + 24) == -1 ||
      sha256 (hdr, HDR_SUM_OFFSET, sum) == -1)
    return -1;
  memcpy (hdr + HDR_SUM_OFFSET, sum, STATE_HEADER_SIZE - HDR_SUM_OFFSET);
  return 0;
}

/* The version is checked before the header checksum because a future
 * version may checksum its header differently.
 */
static int
check_header (const uint8_t hdr[STATE_HEADER_SIZE], uint32_t kind,
              uint64_t *len)
{
  uint8_t sum[SHA256_LEN];

  if (memcmp (hdr, STATE_MAGIC, 8) != 0)
    goto bad;
  if (le_load (hdr + 8, 4) != STATE_VERSION) {
    errno = EPROTO;
    return -1;
  }
  if (sha256 (hdr, HDR_SUM_OFFSET, sum) == -1)
    return -1;
  if (memcmp (hdr + HDR_SUM_OFFSET, sum,
              STATE_HEADER_SIZE - HDR_SUM_OFFSET) != 0 ||
      le_load (hdr + 12, 4) != kind)
    goto bad;
  *len = le_load (hdr + 16, 8);
  return 0;

 bad:
  errno = EBADMSG;
  return -1;
}

int
state_dir_open (const char *path)
{
  struct stat st;
  CLEANUP_FREE char *copy = NULL;
  CLEANUP_CLOSE int pfd = -1;

  if (mkdir (path, 0700) == 0) {
    /* Make the new directory entry itself durable. */
    copy = strdup (path);
    if (copy == NULL)
      return -1;
    pfd = open_dir (dirname (copy));
    if (pfd == -1 || fsync (pfd) == -1)
      return -1;
  }
  else if (errno != EEXIST)
    return -1;

  if (stat (path, &st) == -1)
    return -1;
  if (!S_ISDIR (st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return faccessat (AT_FDCWD, path, W_OK | X_OK, AT_EACCESS);
}

/* Creates a temporary file next to NAME, unique in this process by a
 * counter and across processes by the pid; O_EXCL guards against a
 * leftover from an earlier process with the same pid.
 */
static int
create_temp (int dfd, const char *name, char *tmp, size_t size)
{
  static uint64_t counter;
  uint64_t n;
  int fd, tries;

  for (tries = 0; tries < 100; ++tries) {
    n = __atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED);
    snprintf (tmp, size, "." "%s" TEMP_INFIX "%ld.%" PRIu64,
              name, (long) getpid (), n);
    fd = openat (dfd, tmp,
                 O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0 || errno != EEXIST)
      return fd;
  }
  return -1;
}

/* Removes a failed temporary file, keeping the errno of the failure. */
static int
discard_temp (int dfd, const char *tmp, int fd)
{
  int saved = errno;

  if (fd >= 0)
    close (fd);
  unlinkat (dfd, tmp, 0);
  errno = saved;
  return -1;
}

int
state_write (const char *dir, const char *name, uint32_t kind,
             const void *payload, size_t len)
{
  return state_write_flags (dir, name, kind, payload, len, 0);
}

int
state_write_flags (const char *dir, const char *name, uint32_t kind,
                   const void *payload, size_t len, unsigned flags)
{
  bool sync = !(flags & STATE_NO_SYNC);
  uint8_t hdr[STATE_HEADER_SIZE];
  char tmp[STATE_NAME_MAX + 64];
  CLEANUP_CLOSE int dfd = -1;
  int fd;

  if (check_name (name) == -1)
    return -1;
  if (len > STATE_MAX_PAYLOAD) {
    errno = EFBIG;
    return -1;
  }
  if (encode_header (hdr, kind, payload, len) == -1)
    return -1;

  dfd = open_dir (dir);
  if (dfd == -1)
    return -1;
  fd = create_temp (dfd, name, tmp, sizeof tmp);
  if (fd == -1)
    return -1;
  if (write_full (fd, hdr, sizeof hdr) == -1 ||
      write_full (fd, payload, len) == -1 ||
      (sync && fsync (fd) == -1))
    return discard_temp (dfd, tmp, fd);
  /* close can report a delayed write error (e.g. on NFS). */
  if (close (fd) == -1 ||
      renameat (dfd, tmp, dfd, name) == -1)
    return discard_temp (dfd, tmp, -1);
  return sync ? fsync (dfd) : 0;
}

int
state_write_staged (const char *dir, const char *staged, uint32_t kind,
                    const void *payload, size_t len, unsigned flags)
{
  uint8_t hdr[STATE_HEADER_SIZE];
  CLEANUP_CLOSE int dfd = -1;
  int fd;

  if (len > STATE_MAX_PAYLOAD) {
    errno = EFBIG;
    return -1;
  }
  if (encode_header (hdr, kind, payload, len) == -1)
    return -1;
  dfd = open_dir (dir);
  if (dfd == -1)
    return -1;
  fd = openat (dfd, staged, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
               O_NOFOLLOW, 0600);
  if (fd == -1)
    return -1;
  if (write_full (fd, hdr, sizeof hdr) == -1 ||
      write_full (fd, payload, len) == -1 ||
      (!(flags & STATE_NO_SYNC) && fsync (fd) == -1))
    return discard_temp (dfd, staged, fd);
  if (close (fd) == -1)
    return discard_temp (dfd, staged, -1);
  return 0;
}

bool
state_name_ok (const char *name)
{
  return valid_name (name);
}

/* Reads and checks a whole state file from FD. */
static int
read_state (int fd, uint32_t kind, void **payload, size_t *len)
{
  uint8_t hdr[STATE_HEADER_SIZE], sum[SHA256_LEN];
  CLEANUP_FREE uint8_t *buf = NULL;
  struct stat st;
  uint64_t n;

  if (fstat (fd, &st) == -1)
    return -1;
  if (!S_ISREG (st.st_mode) || st.st_size < STATE_HEADER_SIZE) {
    errno = S_ISDIR (st.st_mode) ? EISDIR : EBADMSG;
    return -1;
  }
  if (read_full (fd, hdr, sizeof hdr) == -1 ||
      check_header (hdr, kind, &n) == -1)
    return -1;
  /* Never trust the length field before it matches the file size. */
  if (n != (uint64_t) st.st_size - STATE_HEADER_SIZE) {
    errno = EBADMSG;
    return -1;
  }
  if (n > STATE_MAX_PAYLOAD) {
    errno = EFBIG;
    return -1;
  }
  buf = malloc (MAX (n, 1));
  if (buf == NULL ||
      read_full (fd, buf, n) == -1 ||
      sha256 (buf, n, sum) == -1)
    return -1;
  if (memcmp (sum, hdr + 24, SHA256_LEN) != 0) {
    errno = EBADMSG;
    return -1;
  }
  *payload = buf;
  *len = n;
  buf = NULL;
  return 0;
}

int
state_read (const char *dir, const char *name, uint32_t kind,
            void **payload, size_t *len)
{
  CLEANUP_CLOSE int dfd = -1;
  CLEANUP_CLOSE int fd = -1;

  if (check_name (name) == -1)
    return -1;
  dfd = open_dir (dir);
  if (dfd == -1)
    return -1;
  /* O_NONBLOCK so that a FIFO planted here cannot hang us. */
  fd = openat (dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd == -1)
    return -1;
  return read_state (fd, kind, payload, len);
}

int
state_remove (const char *dir, const char *name)
{
  CLEANUP_CLOSE int dfd = -1;

  if (check_name (name) == -1)
    return -1;
  dfd = open_dir (dir);
  if (dfd == -1)
    return -1;
  if (unlinkat (dfd, name, 0) == -1)
    return errno == ENOENT ? 0 : -1;
  return fsync (dfd);
}

static bool
has_suffix (const char *name, const char *suffix)
{
  size_t n = strlen (name), s = strlen (suffix);

  return n >= s && strcmp (name + n - s, suffix) == 0;
}

static bool
is_regular (DIR *d, const struct dirent *e)
{
  struct stat st;

  if (e->d_type != DT_UNKNOWN)
    return e->d_type == DT_REG;
  return fstatat (dirfd (d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
    S_ISREG (st.st_mode);
}

static int
compare_names (const void *a, const void *b)
{
  return strcmp (* (char * const *) a, * (char * const *) b);
}

/* Appends a copy of NAME to the growing array *NAMES. */
static int
append_name (char ***names, size_t *n, size_t *cap, const char *name)
{
  char **p;

  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 16;
    p = realloc (*names, *cap * sizeof *p);
    if (p == NULL)
      return -1;
    *names = p;
  }
  (*names)[*n] = strdup (name);
  if ((*names)[*n] == NULL)
    return -1;
  ++*n;
  return 0;
}

int
state_list (const char *dir, const char *suffix, char ***names, size_t *n)
{
  CLEANUP_CLOSEDIR DIR *d = NULL;
  struct dirent *e;
  char **v = NULL;
  size_t len = 0, cap = 0;

  d = opendir (dir);
  if (d == NULL)
    return -1;
  for (;;) {
    errno = 0;
    e = readdir (d);
    if (e == NULL)
      break;
    if (!valid_name (e->d_name) ||
        !has_suffix (e->d_name, suffix ? suffix : "") ||
        !is_regular (d, e))
      continue;
    if (append_name (&v, &len, &cap, e->d_name) == -1)
      goto err;
  }
  if (errno != 0)
    goto err;
  if (len > 0)
    qsort (v, len, sizeof *v, compare_names);
  *names = v;
  *n = len;
  return 0;

 err:
  state_list_free (v, len);
  return -1;
}

void
state_list_free (char **names, size_t n)
{
  int saved = errno;
  size_t i;

  for (i = 0; i < n; ++i)
    free (names[i]);
  free (names);
  errno = saved;
}

void
state_remove_temps (const char *dir)
{
  CLEANUP_CLOSEDIR DIR *d = NULL;
  struct dirent *e;

  d = opendir (dir);
  if (d == NULL)
    return;
  while ((e = readdir (d)) != NULL) {
    if (is_temp_name (e->d_name))
      unlinkat (dirfd (d), e->d_name, 0);
  }
}

int
state_boot_id (char out[64])
{
  CLEANUP_CLOSE int fd = -1;
  ssize_t r;

  fd = open ("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  do
    r = read (fd, out, 63);
  while (r == -1 && errno == EINTR);
  if (r == -1)
    return -1;
  while (r > 0 && (out[r - 1] == '\n' || out[r - 1] == ' '))
    --r;
  out[r] = '\0';
  if (r == 0) {
    errno = EBADMSG;
    return -1;
  }
  return 0;
}
