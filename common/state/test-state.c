/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/resource.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "cleanup.h"
#include "state.h"
#include "buffer.h"

#define KIND 0x4d455441          /* any value will do */

static unsigned passed, failed;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (cond)                                                           \
      passed++;                                                         \
    else {                                                              \
      failed++;                                                         \
      fprintf (stderr, "%s:%d: FAIL: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                   \
  } while (0)

/* EXPR must fail with errno ERR. */
#define CHECK_ERR(expr, err)                                            \
  do {                                                                  \
    int r_ = (expr), e_ = errno;                                        \
    if (r_ == -1 && e_ == (err))                                        \
      passed++;                                                         \
    else {                                                              \
      failed++;                                                         \
      fprintf (stderr, "%s:%d: FAIL: %s: returned %d, errno %s, "       \
               "expected %s\n", __FILE__, __LINE__, #expr, r_,          \
               strerror (e_), strerror (err));                          \
    }                                                                   \
  } while (0)

static char top[] = "/tmp/test-state.XXXXXX";

static char *
path_in (const char *dir, const char *name)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, name) == -1) {
    perror ("asprintf");
    exit (EXIT_FAILURE);
  }
  return p;
}

/* Replaces DIR/NAME with raw bytes, bypassing state_write. */
static void
write_raw (const char *dir, const char *name, const void *p, size_t n)
{
  CLEANUP_FREE char *path = path_in (dir, name);
  int fd;

  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1 || (n > 0 && write (fd, p, n) != (ssize_t) n) ||
      close (fd) == -1) {
    perror (path);
    exit (EXIT_FAILURE);
  }
}

static size_t
read_raw (const char *dir, const char *name, uint8_t *p, size_t max)
{
  CLEANUP_FREE char *path = path_in (dir, name);
  ssize_t n;
  int fd;

  fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd == -1 || (n = read (fd, p, max)) == -1) {
    perror (path);
    exit (EXIT_FAILURE);
  }
  close (fd);
  return n;
}

/* True if DIR/NAME reads back as exactly P, N. */
static bool
holds (const char *dir, const char *name, const void *p, size_t n)
{
  CLEANUP_FREE void *got = NULL;
  size_t len;

  return state_read (dir, name, KIND, &got, &len) == 0 &&
    len == n && memcmp (got, p, n) == 0;
}

/* True if one read of DIR/NAME gives exactly A, AN or B, BN. */
static bool
holds_either (const char *dir, const char *name,
              const void *a, size_t an, const void *b, size_t bn)
{
  CLEANUP_FREE void *got = NULL;
  size_t len;

  if (state_read (dir, name, KIND, &got, &len) == -1)
    return false;
  return (len == an && memcmp (got, a, an) == 0) ||
    (len == bn && memcmp (got, b, bn) == 0);
}

static size_t
count_temps (const char *dir)
{
  DIR *d = opendir (dir);
  struct dirent *e;
  size_t n = 0;

  if (d == NULL)
    return 999;
  while ((e = readdir (d)) != NULL)
    if (strstr (e->d_name, ".tmp.") != NULL)
      n++;
  closedir (d);
  return n;
}

static void
put64 (uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; ++i)
    p[i] = v >> (8 * i);
}

/* Recomputes the header checksum, as a writer of that header would. */
static void
seal_header (uint8_t *hdr)
{
  uint8_t sum[32];

  gnutls_hash_fast (GNUTLS_DIG_SHA256, hdr, 56, sum);
  memcpy (hdr + 56, sum, 8);
}

static void
test_dir_open (void)
{
  CLEANUP_FREE char *dir = path_in (top, "state");
  CLEANUP_FREE char *file = path_in (top, "afile");
  CLEANUP_FREE char *deep = path_in (top, "no/such");
  struct stat st;

  CHECK (state_dir_open (dir) == 0);
  CHECK (stat (dir, &st) == 0 && S_ISDIR (st.st_mode) &&
         (st.st_mode & 0777) == 0700);
  CHECK (state_dir_open (dir) == 0);
  write_raw (top, "afile", "x", 1);
  CHECK_ERR (state_dir_open (file), ENOTDIR);
  CHECK_ERR (state_dir_open (deep), ENOENT);
  if (geteuid () != 0) {
    chmod (dir, 0500);
    CHECK_ERR (state_dir_open (dir), EACCES);
    chmod (dir, 0700);
  }
}

static void
test_round_trip (const char *dir)
{
  uint8_t data[1000], raw[2000], sum[32];
  CLEANUP_FREE void *got = NULL;
  size_t len = 99, i;

  for (i = 0; i < sizeof data; ++i)
    data[i] = i * 7;
  CHECK (state_write (dir, "rt", KIND, data, sizeof data) == 0);
  CHECK (holds (dir, "rt", data, sizeof data));

  /* The documented layout. */
  CHECK (read_raw (dir, "rt", raw, sizeof raw) == 64 + sizeof data);
  CHECK (memcmp (raw, "NBDKCKPT", 8) == 0);
  CHECK (raw[8] == 1 && raw[9] == 0 && raw[10] == 0 && raw[11] == 0);
  CHECK (raw[12] == 0x41 && raw[15] == 0x4d);
  CHECK (raw[16] == (sizeof data & 0xff) && raw[17] == sizeof data >> 8);
  gnutls_hash_fast (GNUTLS_DIG_SHA256, data, sizeof data, sum);
  CHECK (memcmp (raw + 24, sum, 32) == 0);

  /* Replacing, and an empty payload. */
  CHECK (state_write (dir, "rt", KIND, "new", 3) == 0);
  CHECK (holds (dir, "rt", "new", 3));
  CHECK (state_write (dir, "rt", KIND, NULL, 0) == 0);
  CHECK (state_read (dir, "rt", KIND, &got, &len) == 0 &&
         got != NULL && len == 0);
  CHECK (count_temps (dir) == 0);
}

static void
test_bad_names (const char *dir)
{
  CLEANUP_FREE void *got = NULL;
  char longname[STATE_NAME_MAX + 2];
  size_t len;

  CHECK_ERR (state_read (dir, "missing", KIND, &got, &len), ENOENT);
  CHECK_ERR (state_read ("/nonexistent/dir", "x", KIND, &got, &len),
             ENOENT);
  CHECK_ERR (state_write (dir, "", KIND, "x", 1), EINVAL);
  CHECK_ERR (state_write (dir, ".hidden", KIND, "x", 1), EINVAL);
  CHECK_ERR (state_write (dir, "..", KIND, "x", 1), EINVAL);
  CHECK_ERR (state_write (dir, "a/b", KIND, "x", 1), EINVAL);
  memset (longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  CHECK_ERR (state_write (dir, longname, KIND, "x", 1), EINVAL);
  longname[STATE_NAME_MAX] = '\0';
  CHECK (state_write (dir, longname, KIND, "x", 1) == 0);
  CHECK (state_remove (dir, longname) == 0);
  CHECK_ERR (state_read (dir, "../x", KIND, &got, &len), EINVAL);
  CHECK_ERR (state_remove (dir, "a/b"), EINVAL);
  CHECK_ERR (state_write (dir, "big", KIND, "x", STATE_MAX_PAYLOAD + 1),
             EFBIG);
}

/* Every corruption or truncation of a file is detected. */
static void
test_corruption (const char *dir)
{
  static const uint8_t masks[] = { 0x01, 0x80, 0xff };
  uint8_t good[128], bad[129];
  CLEANUP_FREE void *got = NULL;
  size_t n, i, m, len;

  CHECK (state_write (dir, "c", KIND, "hello, checkpoint", 17) == 0);
  n = read_raw (dir, "c", good, sizeof good);
  CHECK (n == 64 + 17);
  CHECK_ERR (state_read (dir, "c", KIND + 1, &got, &len), EBADMSG);

  for (m = 0; m < sizeof masks; ++m) {
    for (i = 0; i < n; ++i) {
      memcpy (bad, good, n);
      bad[i] ^= masks[m];
      write_raw (dir, "c", bad, n);
      /* A different version is reported as such, all else as corrupt. */
      CHECK_ERR (state_read (dir, "c", KIND, &got, &len),
                 i >= 8 && i < 12 ? EPROTO : EBADMSG);
    }
  }
  for (i = 0; i < n; ++i) {
    write_raw (dir, "c", good, i);
    CHECK_ERR (state_read (dir, "c", KIND, &got, &len), EBADMSG);
  }
  memcpy (bad, good, n);
  bad[n] = 0;
  write_raw (dir, "c", bad, n + 1);
  CHECK_ERR (state_read (dir, "c", KIND, &got, &len), EBADMSG);
  write_raw (dir, "c", good, n);
  CHECK (holds (dir, "c", "hello, checkpoint", 17));
}

/* Headers that pass the header checksum but lie. */
static void
test_lying_headers (const char *dir)
{
  uint8_t good[128], bad[128];
  CLEANUP_FREE void *got = NULL;
  CLEANUP_FREE char *path = path_in (dir, "huge");
  size_t n, len;
  int fd;

  CHECK (state_write (dir, "l", KIND, "0123456789abcdef", 16) == 0);
  n = read_raw (dir, "l", good, sizeof good);

  memcpy (bad, good, n);
  put64 (bad + 16, (uint64_t) 1 << 62);
  seal_header (bad);
  write_raw (dir, "l", bad, n);
  CHECK_ERR (state_read (dir, "l", KIND, &got, &len), EBADMSG);

  memcpy (bad, good, n);
  put64 (bad + 16, 8);
  seal_header (bad);
  write_raw (dir, "l", bad, n);
  CHECK_ERR (state_read (dir, "l", KIND, &got, &len), EBADMSG);

  memcpy (bad, good, n);
  bad[8] = 2;
  seal_header (bad);
  write_raw (dir, "l", bad, n);
  CHECK_ERR (state_read (dir, "l", KIND, &got, &len), EPROTO);

  /* A (sparse) file over the limit is refused before allocating. */
  memcpy (bad, good, 64);
  put64 (bad + 16, STATE_MAX_PAYLOAD + 1);
  seal_header (bad);
  write_raw (dir, "huge", bad, 64);
  fd = open (path, O_WRONLY | O_CLOEXEC);
  CHECK (fd >= 0 && ftruncate (fd, 64 + STATE_MAX_PAYLOAD + 1) == 0);
  close (fd);
  CHECK_ERR (state_read (dir, "huge", KIND, &got, &len), EFBIG);
  CHECK (state_remove (dir, "huge") == 0);
}

static void
test_not_regular (const char *dir)
{
  CLEANUP_FREE char *sub = path_in (dir, "sub");
  CLEANUP_FREE char *fifo = path_in (dir, "fifo");
  CLEANUP_FREE void *got = NULL;
  size_t len;

  CHECK (mkdir (sub, 0700) == 0);
  CHECK_ERR (state_read (dir, "sub", KIND, &got, &len), EISDIR);
  CHECK (rmdir (sub) == 0);
  CHECK (mkfifo (fifo, 0600) == 0);
  CHECK_ERR (state_read (dir, "fifo", KIND, &got, &len), EBADMSG);
  CHECK (unlink (fifo) == 0);
}

struct race {
  const char *dir;
  uint8_t *a, *b;
  size_t alen, blen;
  int errors;
  pthread_mutex_t lock;         /* protects done */
  bool done;
};

static bool
race_done (struct race *r)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&r->lock);
  return r->done;
}

static void *
race_writer (void *arg)
{
  struct race *r = arg;

  for (int i = 0; i < 100; ++i) {
    if (state_write (r->dir, "race", KIND,
                     i & 1 ? r->b : r->a, i & 1 ? r->blen : r->alen) == -1)
      r->errors++;
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&r->lock);
  r->done = true;
  return NULL;
}

/* A reader racing a writer only ever sees a whole old or new file. */
static void
test_atomic_replace (const char *dir)
{
  struct race r = { .dir = dir, .alen = 100000, .blen = 50000,
                    .lock = PTHREAD_MUTEX_INITIALIZER };
  pthread_t thread;
  unsigned reads = 0, torn = 0;

  r.a = malloc (r.alen);
  r.b = malloc (r.blen);
  assert (r.a && r.b);
  memset (r.a, 'a', r.alen);
  memset (r.b, 'b', r.blen);
  CHECK (state_write (dir, "race", KIND, r.a, r.alen) == 0);
  CHECK (pthread_create (&thread, NULL, race_writer, &r) == 0);
  while (!race_done (&r)) {
    if (!holds_either (dir, "race", r.a, r.alen, r.b, r.blen))
      torn++;
    reads++;
  }
  pthread_join (thread, NULL);
  CHECK (r.errors == 0);
  CHECK (reads > 0 && torn == 0);
  CHECK (count_temps (dir) == 0);
  CHECK (state_remove (dir, "race") == 0);
  free (r.a);
  free (r.b);
}

/* A write that fails part way leaves the old file and no temp file. */
static void
check_failed_write (const char *dir, int err)
{
  static uint8_t big[1 << 20];

  CHECK (state_write (dir, "keep", KIND, "old", 3) == 0);
  CHECK_ERR (state_write (dir, "keep", KIND, big, sizeof big), err);
  CHECK (holds (dir, "keep", "old", 3));
  CHECK (count_temps (dir) == 0);
}

static void
test_failed_writes (const char *dir)
{
  CLEANUP_FREE char *tiny = path_in (top, "tiny");
  struct rlimit old, lim;

  /* File size limit: write fails with EFBIG after a short write. */
  signal (SIGXFSZ, SIG_IGN);
  CHECK (getrlimit (RLIMIT_FSIZE, &old) == 0);
  lim = old;
  lim.rlim_cur = 4096;
  CHECK (setrlimit (RLIMIT_FSIZE, &lim) == 0);
  check_failed_write (dir, EFBIG);
  CHECK (setrlimit (RLIMIT_FSIZE, &old) == 0);
  signal (SIGXFSZ, SIG_DFL);

  /* A full file system must come through as ENOSPC. */
  CHECK (mkdir (tiny, 0700) == 0);
  if (geteuid () == 0 &&
      mount ("tmpfs", tiny, "tmpfs", 0, "size=64k,mode=0700") == 0) {
    check_failed_write (tiny, ENOSPC);
    CHECK (umount (tiny) == 0);
  }
  else
    printf ("SKIP: ENOSPC on a tiny tmpfs (cannot mount)\n");

  /* A read-only directory (root ignores permissions). */
  if (geteuid () != 0) {
    CHECK (state_write (dir, "keep", KIND, "old", 3) == 0);
    chmod (dir, 0500);
    CHECK_ERR (state_write (dir, "keep", KIND, "new", 3), EACCES);
    chmod (dir, 0700);
    CHECK (holds (dir, "keep", "old", 3));
  }
  CHECK (state_remove (dir, "keep") == 0);
}

static void
test_remove (const char *dir)
{
  CLEANUP_FREE void *got = NULL;
  size_t len;

  CHECK (state_write (dir, "gone", KIND, "x", 1) == 0);
  CHECK (state_remove (dir, "gone") == 0);
  CHECK_ERR (state_read (dir, "gone", KIND, &got, &len), ENOENT);
  CHECK (state_remove (dir, "gone") == 0);
}

static void
test_list_and_temps (void)
{
  CLEANUP_FREE char *dir = path_in (top, "list");
  CLEANUP_FREE char *sub = path_in (dir, "d.meta");
  CLEANUP_FREE char *link = path_in (dir, "e.meta");
  char **names = NULL;
  size_t n = 99;

  CHECK (state_dir_open (dir) == 0);
  CHECK (state_list (dir, ".meta", &names, &n) == 0 && n == 0);
  state_list_free (names, n);

  CHECK (state_write (dir, "b.meta", KIND, "b", 1) == 0);
  CHECK (state_write (dir, "a.meta", KIND, "a", 1) == 0);
  CHECK (state_write (dir, "c.bitmap", KIND, "c", 1) == 0);
  write_raw (dir, ".a.meta.tmp.1.2", "junk", 4);
  write_raw (dir, ".c.bitmap.tmp.77.0", "junk", 4);
  write_raw (dir, ".hidden", "keep", 4);
  CHECK (mkdir (sub, 0700) == 0);
  CHECK (symlink ("a.meta", link) == 0);

  CHECK (state_list (dir, ".meta", &names, &n) == 0 && n == 2 &&
         strcmp (names[0], "a.meta") == 0 &&
         strcmp (names[1], "b.meta") == 0);
  state_list_free (names, n);
  CHECK (state_list (dir, NULL, &names, &n) == 0 && n == 3 &&
         strcmp (names[2], "c.bitmap") == 0);
  state_list_free (names, n);
  CHECK_ERR (state_list ("/nonexistent/dir", "", &names, &n), ENOENT);

  /* A crash mid-write leaves a temp file and the old contents. */
  CHECK (holds (dir, "a.meta", "a", 1));
  CHECK (count_temps (dir) == 2);
  state_remove_temps (dir);
  CHECK (count_temps (dir) == 0);
  CHECK (access (link, F_OK) == 0);
  CHECK (holds (dir, "c.bitmap", "c", 1));
  CHECK (read_raw (dir, ".hidden", (uint8_t [8]) { 0 }, 8) == 4);
}

/* Decodes the sequence written by test_buffer. */
static int
decode (const void *p, size_t n)
{
  struct state_reader r;
  uint8_t u8, raw[3];
  uint32_t u32;
  uint64_t u64;
  char *s1 = NULL, *s2 = NULL;
  int ret = -1;

  state_reader_init (&r, p, n);
  state_get_u8 (&r, &u8);
  state_get_u32 (&r, &u32);
  state_get_u64 (&r, &u64);
  state_get_string (&r, &s1);
  state_get_string (&r, &s2);
  state_get_bytes (&r, raw, 3);
  if (state_reader_end (&r) == 0 &&
      u8 == 0xab && u32 == 0xdeadbeef && u64 == UINT64_MAX - 1 &&
      strcmp (s1, "hello") == 0 && strcmp (s2, "") == 0 &&
      memcmp (raw, "xyz", 3) == 0)
    ret = 0;
  free (s1);
  free (s2);
  return ret;
}

static void
test_buffer (void)
{
  struct state_buf b = STATE_BUF_INIT;
  struct state_reader r;
  char *s = NULL;
  uint32_t u32;
  size_t i;

  CHECK (state_put_u8 (&b, 0xab) == 0);
  CHECK (state_put_u32 (&b, 0xdeadbeef) == 0);
  CHECK (state_put_u64 (&b, UINT64_MAX - 1) == 0);
  CHECK (state_put_string (&b, "hello") == 0);
  CHECK (state_put_string (&b, "") == 0);
  CHECK (state_put_bytes (&b, "xyz", 3) == 0);
  CHECK (b.len == 1 + 4 + 8 + 4 + 5 + 4 + 3);
  CHECK (memcmp (b.data + 1, "\xef\xbe\xad\xde", 4) == 0);
  CHECK (decode (b.data, b.len) == 0);
  for (i = 0; i < b.len; ++i)
    CHECK_ERR (decode (b.data, i), EBADMSG);
  state_buf_free (&b);
  CHECK (b.data == NULL && b.len == 0);

  /* A string length beyond the input is refused before allocating. */
  state_reader_init (&r, "\xff\xff\xff\xff" "abc", 7);
  CHECK_ERR (state_get_string (&r, &s), EBADMSG);
  CHECK (s == NULL);
  /* ... and consumes nothing, as every failing call. */
  CHECK (r.left == 7);
  /* Errors are sticky. */
  CHECK_ERR (state_get_u8 (&r, (uint8_t [1]) { 0 }), EBADMSG);
  state_reader_init (&r, "\x03\0\0\0" "a\0b", 7);
  CHECK_ERR (state_get_string (&r, &s), EBADMSG);
  state_reader_init (&r, "\x01\0\0\0\0", 5);
  CHECK (state_get_u32 (&r, &u32) == 0 && u32 == 1);
  CHECK_ERR (state_reader_end (&r), EBADMSG);
}

static void
test_boot_id (void)
{
  char id[64], again[64];

  CHECK (state_boot_id (id) == 0);
  CHECK (strlen (id) == 36);
  CHECK (id[8] == '-' && id[13] == '-' && id[18] == '-' && id[23] == '-');
  CHECK (state_boot_id (again) == 0 && strcmp (id, again) == 0);
}

static int
remove_entry (const char *path, const struct stat *st, int flag,
              struct FTW *ftw)
{
  return remove (path);
}

int
main (void)
{
  CLEANUP_FREE char *dir = NULL;

  if (mkdtemp (top) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  dir = path_in (top, "state");

  test_dir_open ();
  test_round_trip (dir);
  test_bad_names (dir);
  test_corruption (dir);
  test_lying_headers (dir);
  test_not_regular (dir);
  test_atomic_replace (dir);
  test_failed_writes (dir);
  test_remove (dir);
  test_list_and_temps ();
  test_buffer ();
  test_boot_id ();

  nftw (top, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  printf ("%u passed, %u failed\n", passed, failed);
  exit (failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
}
