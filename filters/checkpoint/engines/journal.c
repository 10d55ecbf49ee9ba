/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A node's write journal (see journal.h). */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "cleanup.h"
#include "state.h"
#include "buffer.h"
#include "engines/journal.h"

#define MAGIC "NCJRNL\0\1"
#define MAGIC_LEN 8
#define JOURNAL_VERSION 1
#define SUM_LEN 32
#define RECORD_LEN 24
#define BOOT_ID_LEN 64

struct journal {
  int fd;
  bool power;
  char **names;
  size_t nr_names;
  char *path;                   /* of the started journal */
  struct next_journal *next;    /* prepared, not yet switched to */
  char *dir;                    /* its directory */
  bool broken;                  /* journal_break: appends do nothing */
  /* Group commit (power): records appended and records synced. */
  pthread_mutex_t lock;
  pthread_cond_t synced_cond;
  uint64_t appended, synced;
  bool syncing;
  /* A failed fdatasync: every append fails until the next start (a
   * later fdatasync may succeed with the failed pages still lost).
   */
  int sync_error;
};

struct journal *
journal_new (bool power)
{
  struct journal *j = calloc (1, sizeof *j);

  if (j == NULL)
    return NULL;
  j->fd = -1;
  j->power = power;
  pthread_mutex_init (&j->lock, NULL);
  pthread_cond_init (&j->synced_cond, NULL);
  return j;
}

static void
free_names (char **names, size_t nr)
{
  size_t i;

  for (i = 0; i < nr; i++)
    free (names[i]);
  free (names);
}

/* The journal prepared but not yet switched to (journal_prepare). */
struct next_journal {
  int fd;
  char *path;                   /* its final path */
  char *dir;
  char **names;
  size_t nr;
};

static void
drop_next (struct journal *j)
{
  if (j->next == NULL)
    return;
  if (j->next->fd >= 0)
    close (j->next->fd);
  free (j->next->path);
  free (j->next->dir);
  free_names (j->next->names, j->next->nr);
  free (j->next);
  j->next = NULL;
}

void
journal_free (struct journal *j)
{
  if (j == NULL)
    return;
  if (j->fd >= 0)
    close (j->fd);
  drop_next (j);
  free_names (j->names, j->nr_names);
  free (j->path);
  free (j->dir);
  pthread_mutex_destroy (&j->lock);
  pthread_cond_destroy (&j->synced_cond);
  free (j);
}

bool
journal_started (const struct journal *j)
{
  return j->fd >= 0;
}

bool
journal_covers (const struct journal *j, char **names, size_t nr)
{
  size_t i, k;

  if (j->fd < 0 || nr != j->nr_names)
    return false;
  for (i = 0; i < nr; i++) {
    for (k = 0; k < j->nr_names; k++)
      if (strcmp (names[i], j->names[k]) == 0)
        break;
    if (k == j->nr_names)
      return false;
  }
  return true;
}

static void
put_le64 (uint8_t *p, uint64_t v)
{
  int i;

  for (i = 0; i < 8; i++)
    p[i] = v >> (8 * i);
}

static uint64_t
get_le64 (const uint8_t *p)
{
  uint64_t v = 0;
  int i;

  for (i = 0; i < 8; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

/* Tells a record from zeros, garbage or a flipped bit. */
static uint64_t
record_check (uint64_t offset, uint64_t len)
{
  uint64_t h = 0x6a09e667f3bcc908ULL;

  h ^= offset * 0x9e3779b97f4a7c15ULL;
  h = (h << 31) | (h >> 33);
  h ^= len * 0xc2b2ae3d27d4eb4fULL;
  h = (h << 29) | (h >> 35);
  return h ^ 0x165667b19e3779f9ULL;
}

static int
full_write (int fd, const void *buf, size_t len)
{
  const char *p = buf;
  ssize_t r;

  while (len > 0) {
    r = write (fd, p, len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1)
      return -1;
    p += r;
    len -= r;
  }
  return 0;
}

static char *
path_of (const char *dir, const char *prefix, const char *node,
         const char *suffix)
{
  char *p;

  return asprintf (&p, "%s/%sjournal.%s%s", dir, prefix, node, suffix) == -1
    ? NULL : p;
}

/* The header: magic, payload length, payload (boot id, mode, names),
 * SHA-256 of all before it.
 */
static int
make_header (struct state_buf *out, bool power, char **names, size_t nr)
{
  struct state_buf body = STATE_BUF_INIT;
  char boot_id[BOOT_ID_LEN];
  uint8_t sum[SUM_LEN];
  size_t i;

  if (state_boot_id (boot_id) == -1)
    return -1;
  state_put_u32 (&body, JOURNAL_VERSION);
  state_put_string (&body, boot_id);
  state_put_u8 (&body, power);
  state_put_u32 (&body, nr);
  for (i = 0; i < nr; i++)
    state_put_string (&body, names[i]);
  state_put_bytes (out, MAGIC, MAGIC_LEN);
  state_put_u32 (out, body.len);
  state_put_bytes (out, body.data, body.len);
  state_buf_free (&body);
  if (out->err) {
    errno = out->err;
    return -1;
  }
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, out->data, out->len, sum) < 0) {
    errno = EIO;
    return -1;
  }
  state_put_bytes (out, sum, SUM_LEN);
  if (out->err) {
    errno = out->err;
    return -1;
  }
  return 0;
}

static int
sync_dir (const char *dir)
{
  int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), r, saved;

  if (fd == -1)
    return -1;
  r = fsync (fd);
  saved = errno;
  close (fd);
  errno = saved;
  return r;
}

int
journal_prepare (struct journal *j, const char *dir, const char *node,
                 char **names, size_t nr, const char *file)
{
  CLEANUP_FREE char *at = NULL;
  struct state_buf hdr = STATE_BUF_INIT;
  struct next_journal *nx;
  size_t i;
  int saved;

  drop_next (j);
  nx = calloc (1, sizeof *nx);
  if (nx == NULL)
    return -1;
  nx->fd = -1;
  j->next = nx;
  if (asprintf (&at, "%s/%s", dir, file) == -1)
    at = NULL;
  nx->path = path_of (dir, "", node, "");
  nx->dir = strdup (dir);
  nx->names = calloc (nr + 1, sizeof *nx->names);
  if (at == NULL || nx->path == NULL || nx->dir == NULL || nx->names == NULL)
    goto error;
  for (i = 0; i < nr; i++, nx->nr++)
    if ((nx->names[i] = strdup (names[i])) == NULL)
      goto error;
  if (make_header (&hdr, j->power, names, nr) == -1)
    goto error;
  nx->fd = open (at, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
                 0600);
  if (nx->fd == -1 || full_write (nx->fd, hdr.data, hdr.len) == -1 ||
      (j->power && fdatasync (nx->fd) == -1)) {
    saved = errno;
    if (nx->fd >= 0)
      unlink (at);
    errno = saved;
    goto error;
  }
  state_buf_free (&hdr);
  return 0;

 error:
  saved = errno;
  state_buf_free (&hdr);
  drop_next (j);
  errno = saved;
  return -1;
}

void
journal_switch (struct journal *j)
{
  struct next_journal *nx = j->next;

  if (nx == NULL)
    return;
  if (j->fd >= 0)
    close (j->fd);
  free_names (j->names, j->nr_names);
  free (j->path);
  free (j->dir);
  j->fd = nx->fd;
  j->path = nx->path;
  j->dir = nx->dir;
  j->names = nx->names;
  j->nr_names = nx->nr;
  j->appended = j->synced = 0;
  j->sync_error = 0;
  j->broken = false;
  free (nx);
  j->next = NULL;
}

void
journal_cancel (struct journal *j)
{
  drop_next (j);
}

int
journal_start (struct journal *j, const char *dir, const char *node,
               char **names, size_t nr)
{
  CLEANUP_FREE char *tmp = path_of (dir, ".", node, ".tmp.journal");
  const char *base;
  int saved;

  if (tmp == NULL)
    return -1;
  base = strrchr (tmp, '/') + 1;
  if (journal_prepare (j, dir, node, names, nr, base) == -1)
    return -1;
  /* Power: the new, empty journal must not be lost while the bits it
   * relies on were synced (they were, before).
   */
  if (rename (tmp, j->next->path) == -1 ||
      (j->power && sync_dir (dir) == -1)) {
    saved = errno;
    unlink (tmp);
    journal_cancel (j);
    errno = saved;
    return -1;
  }
  journal_switch (j);
  return 0;
}

/* Power: wait until record SEQ is durable, syncing for every record
 * appended so far if no one else is.
 */
static int
group_sync (struct journal *j, uint64_t seq)
{
  int r = 0;

  while (j->synced < seq && r == 0) {
    if (j->sync_error) {
      errno = j->sync_error;
      return -1;
    }
    if (j->syncing) {
      pthread_cond_wait (&j->synced_cond, &j->lock);
      continue;
    }
    uint64_t target = j->appended;
    j->syncing = true;
    pthread_mutex_unlock (&j->lock);
    r = fdatasync (j->fd);
    pthread_mutex_lock (&j->lock);
    j->syncing = false;
    if (r == -1)
      j->sync_error = errno ? errno : EIO;
    else if (target > j->synced)
      j->synced = target;
    pthread_cond_broadcast (&j->synced_cond);
  }
  return r;
}

int
journal_append (void *opaque, uint64_t offset, uint64_t len)
{
  struct journal *j = opaque;
  uint8_t rec[RECORD_LEN];
  ssize_t r;
  uint64_t seq;
  int ret;

  if (__atomic_load_n (&j->broken, __ATOMIC_ACQUIRE))
    return 0;
  put_le64 (rec, offset);
  put_le64 (rec + 8, len);
  put_le64 (rec + 16, record_check (offset, len));
  do
    r = write (j->fd, rec, RECORD_LEN);
  while (r == -1 && errno == EINTR);
  if (r != RECORD_LEN) {
    /* A short record is seen as damage at recovery: safe, not lost. */
    if (r >= 0)
      errno = ENOSPC;
    return -1;
  }
  if (!j->power)
    return 0;
  pthread_mutex_lock (&j->lock);
  seq = ++j->appended;
  ret = group_sync (j, seq);
  pthread_mutex_unlock (&j->lock);
  return ret;
}

int
journal_break (struct journal *j)
{
  int r = 0;

  pthread_mutex_lock (&j->lock);
  /* Power: the removal is durable before any write goes on without its
   * record, or a power cut brings back the journal that lacks it and
   * the bitmaps load as consistent.  Writers wait on the lock.
   */
  if (!j->broken) {
    if ((unlink (j->path) == -1 && errno != ENOENT) ||
        (j->power && sync_dir (j->dir) == -1))
      r = -1;
    else {
      __atomic_store_n (&j->broken, true, __ATOMIC_RELEASE);
      r = 1;
    }
  }
  pthread_mutex_unlock (&j->lock);
  return r;
}

bool
journal_broken (struct journal *j)
{
  return __atomic_load_n (&j->broken, __ATOMIC_ACQUIRE);
}

int
journal_remove (const char *dir, const char *node)
{
  CLEANUP_FREE char *name = NULL;

  if (asprintf (&name, "journal.%s", node) == -1)
    return -1;
  return state_remove (dir, name);
}

static int
read_fd (int fd, uint8_t **data, size_t *len)
{
  struct stat st;
  size_t got = 0;
  ssize_t r;

  if (fstat (fd, &st) == -1)
    return -1;
  if (!S_ISREG (st.st_mode)) {
    errno = EISDIR;
    return -1;
  }
  *data = malloc (st.st_size + 1);
  if (*data == NULL)
    return -1;
  while (got < (size_t) st.st_size) {
    r = read (fd, *data + got, st.st_size - got);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r == 0)
        break;
      free (*data);
      *data = NULL;
      return -1;
    }
    got += r;
  }
  *len = got;
  return 0;
}

static int
read_all (const char *path, uint8_t **data, size_t *len)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC), r, saved;

  if (fd == -1)
    return -1;
  r = read_fd (fd, data, len);
  saved = errno;
  close (fd);
  errno = saved;
  return r;
}

static enum journal_status
damaged (struct journal_contents *c, const char *why)
{
  c->why = why;
  return JOURNAL_DAMAGED;
}

enum journal_status
journal_read (const char *dir, const char *node, struct journal_contents *c)
{
  CLEANUP_FREE char *path = path_of (dir, "", node, "");
  CLEANUP_FREE uint8_t *data = NULL;
  CLEANUP_FREE char *boot_id = NULL;
  char now[BOOT_ID_LEN];
  uint8_t sum[SUM_LEN], power = 0;
  struct state_reader r;
  uint32_t body_len = 0, version = 0, nr = 0, i;
  size_t len = 0, hdr_len, nrec;

  memset (c, 0, sizeof *c);
  if (path == NULL)
    return damaged (c, "out of memory");
  if (read_all (path, &data, &len) == -1) {
    if (errno == ENOENT)
      return JOURNAL_MISSING;
    c->why = strerror (errno);
    return JOURNAL_DAMAGED;
  }
  if (len < MAGIC_LEN + 4 || memcmp (data, MAGIC, MAGIC_LEN) != 0)
    return damaged (c, "not a journal (bad magic)");
  state_reader_init (&r, data + MAGIC_LEN, 4);
  state_get_u32 (&r, &body_len);
  hdr_len = MAGIC_LEN + 4 + (size_t) body_len;
  if (body_len > len || hdr_len + SUM_LEN > len)
    return damaged (c, "truncated header");
  if (gnutls_hash_fast (GNUTLS_DIG_SHA256, data, hdr_len, sum) < 0 ||
      memcmp (sum, data + hdr_len, SUM_LEN) != 0)
    return damaged (c, "header checksum mismatch");
  state_reader_init (&r, data + MAGIC_LEN + 4, body_len);
  state_get_u32 (&r, &version);
  if (r.err == 0 && version != JOURNAL_VERSION)
    return damaged (c, "unknown journal version");
  state_get_string (&r, &boot_id);
  state_get_u8 (&r, &power);
  state_get_u32 (&r, &nr);
  if (r.err || nr > body_len)
    return damaged (c, "malformed header");
  c->power = power;
  c->names = calloc (nr + 1, sizeof *c->names);
  if (c->names == NULL)
    return damaged (c, "out of memory");
  for (i = 0; i < nr; i++) {
    if (state_get_string (&r, &c->names[i]) == -1)
      return damaged (c, "malformed header");
    c->nr_names++;
  }
  if (state_reader_end (&r) == -1)
    return damaged (c, "malformed header");

  hdr_len += SUM_LEN;
  nrec = (len - hdr_len) / RECORD_LEN;
  c->torn = (len - hdr_len) % RECORD_LEN;
  c->ranges = malloc ((nrec ? nrec : 1) * 2 * sizeof *c->ranges);
  if (c->ranges == NULL)
    return damaged (c, "out of memory");
  for (i = 0; i < nrec; i++) {
    const uint8_t *p = data + hdr_len + (size_t) i * RECORD_LEN;
    uint64_t off = get_le64 (p), l = get_le64 (p + 8);

    if (get_le64 (p + 16) != record_check (off, l))
      return damaged (c, "a damaged record");
    c->ranges[2 * c->nr_ranges] = off;
    c->ranges[2 * c->nr_ranges + 1] = l;
    c->nr_ranges++;
  }
  if (state_boot_id (now) == -1)
    return damaged (c, "cannot read the kernel boot id");
  if (strcmp (now, boot_id) != 0)
    return JOURNAL_OTHER_BOOT;
  return JOURNAL_OK;
}

bool
journal_contents_covers (const struct journal_contents *c, const char *name)
{
  size_t i;

  for (i = 0; i < c->nr_names; i++)
    if (strcmp (c->names[i], name) == 0)
      return true;
  return false;
}

void
journal_contents_free (struct journal_contents *c)
{
  if (c->names)
    free_names (c->names, c->nr_names);
  free (c->ranges);
  memset (c, 0, sizeof *c);
}
