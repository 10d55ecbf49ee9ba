/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* A simulated power cut of one directory, preloaded into nbdkit by
 * crash_loop.py (powercut) for test-crash-power-cut.sh:
 *
 *   LD_PRELOAD=powercut-shim.so POWERCUT_DIR=DIR POWERCUT_SHADOW=S nbdkit ...
 *
 * It acts only in a program called nbdkit (or POWERCUT_PROG), not in
 * a shell that runs it (tests/sanitizer-nbdkit), and not in what
 * nbdkit runs.
 *
 * While nbdkit runs, S holds what a power cut would leave of DIR in
 * the worst case that POSIX allows (the kernel's page cache and
 * un-synced directory changes lost):
 *
 *   S/data/ID   the content of file ID as of its last fsync or
 *               fdatasync (or sync, syncfs), or as it was when S was
 *               made (at the first start on it);
 *   S/dir       DIR's entries as of its last fsync (or when S was made):
 *               one line per entry, "HEXNAME TYPE ID MODE", TYPE f
 *               (a regular file) or d (a directory, kept empty).
 *
 * ID is the inode number and the birth time, so that a file that
 * reuses a removed one's inode number is another file.  An entry whose
 * file was never synced is an empty file after the cut (what ext4
 * without auto_da_alloc leaves).  A file's image is taken when fsync is
 * called, before the real fsync runs: everything written before the
 * call, no less; a kill while it is being taken leaves the older image
 * (that fsync had not returned).  S itself is never synced: the
 * machine does not lose power, nbdkit is killed (SIGKILL) and
 * powercut.py then rebuilds DIR from S.
 *
 * Only DIR's own entries are modelled (the state directory is flat).
 * What the model cannot describe aborts nbdkit with a message rather
 * than letting the image lie: an fsync below a subdirectory of DIR, an
 * O_SYNC or O_DSYNC file in DIR, sync_file_range on one.  Everything
 * else passes through untouched.
 */
#include <config.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static char dir[PATH_MAX];      /* realpath of POWERCUT_DIR; "" if off */
static size_t dir_len;
static dev_t dir_dev;
static char shadow[PATH_MAX];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool warned_btime;

static int (*real_fsync) (int);
static int (*real_fdatasync) (int);
static int (*real_syncfs) (int);
static void (*real_sync) (void);
static int (*real_sync_file_range) (int, off_t, off_t, unsigned);
static int (*real_open) (const char *, int, ...);
static int (*real_open64) (const char *, int, ...);
static int (*real_openat) (int, const char *, int, ...);
static int (*real_openat64) (int, const char *, int, ...);

static void __attribute__ ((noreturn, format (printf, 1, 2)))
die (const char *fs, ...)
{
  va_list ap;

  fprintf (stderr, "powercut-shim: ");
  va_start (ap, fs);
  vfprintf (stderr, fs, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  abort ();
}

static void *
next (const char *name)
{
  void *p = dlsym (RTLD_NEXT, name);

  if (p == NULL)
    die ("dlsym %s: %s", name, dlerror ());
  return p;
}

/* "INO-BTIME" of FD (or of NAME in DIRFD when FD is -1). */
static void
file_id (int dirfd, const char *name, char *out, size_t n)
{
  struct statx st;

  if (statx (dirfd, name, AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH),
             STATX_INO | STATX_BTIME, &st) == -1)
    die ("statx %s: %m", name[0] ? name : "(fd)");
  if (!(st.stx_mask & STATX_BTIME) && !warned_btime) {
    warned_btime = true;
    fprintf (stderr, "powercut-shim: no birth time on this file system: "
             "a reused inode number would be taken for the same file\n");
  }
  snprintf (out, n, "%llx-%llx.%x", (unsigned long long) st.stx_ino,
            (unsigned long long) st.stx_btime.tv_sec,
            (unsigned) st.stx_btime.tv_nsec);
}

static void
write_all (int fd, const char *p, size_t len, const char *what)
{
  while (len > 0) {
    ssize_t r = write (fd, p, len);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      die ("writing %s: %m", what);
    p += r;
    len -= r;
  }
}

/* Atomically replace SHADOW/NAME with the contents of SRC (an open
 * file, read from its start) or with BUF.
 */
static void
shadow_put (const char *name, int src, const char *buf, size_t len)
{
  char tmp[PATH_MAX + 64], final[PATH_MAX + 64], b[65536];
  int fd;
  ssize_t r;
  off_t off = 0;

  snprintf (tmp, sizeof tmp, "%s/%s.tmp.%ld", shadow, name,
            (long) syscall (SYS_gettid));
  snprintf (final, sizeof final, "%s/%s", shadow, name);
  fd = real_open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1)
    die ("creating %s: %m", tmp);
  if (src == -1)
    write_all (fd, buf, len, tmp);
  else
    while ((r = pread (src, b, sizeof b, off)) != 0) {
      if (r == -1 && errno == EINTR)
        continue;
      if (r == -1)
        die ("reading a file of %s: %m", dir);
      write_all (fd, b, r, tmp);
      off += r;
    }
  if (close (fd) == -1 || rename (tmp, final) == -1)
    die ("saving %s: %m", final);
}

/* The durable image of file FD (opened for reading) becomes its
 * content now.
 */
static void
image_file (int fd)
{
  char id[64], name[80];

  file_id (fd, "", id, sizeof id);
  snprintf (name, sizeof name, "data/%s", id);
  shadow_put (name, fd, NULL, 0);
}

static void
image_fd (int fd)
{
  char path[64];
  int rfd;

  /* A descriptor of its own: FD may be write-only, and its offset is
   * not ours to move.
   */
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);
  rfd = real_open (path, O_RDONLY | O_CLOEXEC);
  if (rfd == -1)
    die ("reopening %s: %m", path);
  image_file (rfd);
  close (rfd);
}

/* S/dir becomes DIR's entries now; with DATA, also every file's
 * content (sync, syncfs, start-up).
 */
static void
image_dir (bool data)
{
  char *buf = NULL, id[64], hex[2 * NAME_MAX + 1];
  size_t len = 0, i;
  FILE *out = open_memstream (&buf, &len);
  DIR *d = opendir (dir);
  struct dirent *e;
  struct stat st;

  if (out == NULL || d == NULL)
    die ("listing %s: %m", dir);
  while ((errno = 0, e = readdir (d)) != NULL) {
    if (strcmp (e->d_name, ".") == 0 || strcmp (e->d_name, "..") == 0)
      continue;
    if (fstatat (dirfd (d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1) {
      if (errno == ENOENT)      /* removed meanwhile */
        continue;
      die ("stat %s/%s: %m", dir, e->d_name);
    }
    if (!S_ISREG (st.st_mode) && !S_ISDIR (st.st_mode))
      die ("%s/%s: only files and directories are modelled", dir,
           e->d_name);
    for (i = 0; e->d_name[i]; i++)
      sprintf (hex + 2 * i, "%02x", (unsigned char) e->d_name[i]);
    file_id (dirfd (d), e->d_name, id, sizeof id);
    fprintf (out, "%s %c %s %o\n", hex, S_ISREG (st.st_mode) ? 'f' : 'd',
             id, (unsigned) (st.st_mode & 07777));
    if (data && S_ISREG (st.st_mode)) {
      int fd = openat (dirfd (d), e->d_name, O_RDONLY | O_CLOEXEC);
      if (fd == -1)
        die ("opening %s/%s: %m", dir, e->d_name);
      image_file (fd);
      close (fd);
    }
  }
  if (errno)
    die ("reading %s: %m", dir);
  closedir (d);
  if (fclose (out) != 0)
    die ("listing %s: out of memory", dir);
  shadow_put ("dir", -1, buf, len);
  free (buf);
}

enum kind { OTHER, THE_DIR, A_FILE };

/* Is FD DIR itself, one of its files, or something else? */
static enum kind
classify (int fd)
{
  char link[64], path[PATH_MAX + 16];
  const char *rest;
  struct stat st;
  ssize_t n;

  if (dir[0] == '\0' || fstat (fd, &st) == -1 || st.st_dev != dir_dev)
    return OTHER;
  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, path, sizeof path - 1);
  if (n <= 0)
    return OTHER;
  path[n] = '\0';
  if (strcmp (path, dir) == 0)
    return THE_DIR;
  if (strncmp (path, dir, dir_len) != 0 || path[dir_len] != '/')
    return OTHER;
  rest = path + dir_len + 1;
  /* A removed file keeps its name plus " (deleted)": still modelled,
   * its image matters while DIR's durable entries name it.
   */
  if (strchr (rest, '/') != NULL)
    die ("%s: below a subdirectory of %s: not modelled", path, dir);
  return S_ISREG (st.st_mode) ? A_FILE : OTHER;
}

static void
before_sync (int fd)
{
  switch (classify (fd)) {
  case THE_DIR:
    pthread_mutex_lock (&lock);
    image_dir (false);
    pthread_mutex_unlock (&lock);
    break;
  case A_FILE:
    pthread_mutex_lock (&lock);
    image_fd (fd);
    pthread_mutex_unlock (&lock);
    break;
  case OTHER:
    break;
  }
}

int
fsync (int fd)
{
  before_sync (fd);
  return real_fsync (fd);
}

int
fdatasync (int fd)
{
  before_sync (fd);
  return real_fdatasync (fd);
}

void
sync (void)
{
  if (dir[0]) {
    pthread_mutex_lock (&lock);
    image_dir (true);
    pthread_mutex_unlock (&lock);
  }
  real_sync ();
}

int
syncfs (int fd)
{
  struct stat st;

  if (dir[0] && fstat (fd, &st) == 0 && st.st_dev == dir_dev) {
    pthread_mutex_lock (&lock);
    image_dir (true);
    pthread_mutex_unlock (&lock);
  }
  return real_syncfs (fd);
}

int
sync_file_range (int fd, off_t off, off_t n, unsigned flags)
{
  if (classify (fd) != OTHER)
    die ("sync_file_range on a file of %s: not modelled", dir);
  return real_sync_file_range (fd, off, n, flags);
}

/* Every write to an O_SYNC or O_DSYNC file would be durable at once. */
static int
check_open (int fd, int flags)
{
  if (fd >= 0 && (flags & O_DSYNC) && classify (fd) != OTHER)
    die ("an O_SYNC or O_DSYNC file in %s: not modelled", dir);
  return fd;
}

#define MODE_ARG(flags, mode)                                   \
  do {                                                          \
    if ((flags) & O_CREAT || ((flags) & O_TMPFILE) == O_TMPFILE) { \
      va_list ap;                                               \
      va_start (ap, flags);                                     \
      mode = va_arg (ap, mode_t);                               \
      va_end (ap);                                              \
    }                                                           \
  } while (0)

int
open (const char *path, int flags, ...)
{
  mode_t mode = 0;

  MODE_ARG (flags, mode);
  return check_open (real_open (path, flags, mode), flags);
}

int
open64 (const char *path, int flags, ...)
{
  mode_t mode = 0;

  MODE_ARG (flags, mode);
  return check_open (real_open64 (path, flags, mode), flags);
}

int
openat (int dfd, const char *path, int flags, ...)
{
  mode_t mode = 0;

  MODE_ARG (flags, mode);
  return check_open (real_openat (dfd, path, flags, mode), flags);
}

int
openat64 (int dfd, const char *path, int flags, ...)
{
  mode_t mode = 0;

  MODE_ARG (flags, mode);
  return check_open (real_openat64 (dfd, path, flags, mode), flags);
}

/* Start-up: everything in DIR is durable (the previous cut left it),
 * unless S already holds an image.
 */
static void __attribute__ ((constructor))
powercut_init (void)
{
  const char *d = getenv ("POWERCUT_DIR"), *s = getenv ("POWERCUT_SHADOW");
  const char *prog = getenv ("POWERCUT_PROG");
  char data[PATH_MAX + 8];
  struct stat st;

  real_fsync = next ("fsync");
  real_fdatasync = next ("fdatasync");
  real_syncfs = next ("syncfs");
  real_sync = next ("sync");
  real_sync_file_range = next ("sync_file_range");
  real_open = next ("open");
  real_open64 = next ("open64");
  real_openat = next ("openat");
  real_openat64 = next ("openat64");
  if (d == NULL || s == NULL || d[0] == '\0' || s[0] == '\0')
    return;
  /* Only in nbdkit itself, not in a wrapper script's shell. */
  if (strcmp (program_invocation_short_name, prog ? prog : "nbdkit") != 0)
    return;
  if (realpath (d, dir) == NULL || stat (dir, &st) == -1 ||
      !S_ISDIR (st.st_mode))
    die ("POWERCUT_DIR=%s: not a directory", d);
  dir_len = strlen (dir);
  dir_dev = st.st_dev;
  if (strlen (s) >= sizeof shadow - 80)
    die ("POWERCUT_SHADOW=%s: too long", s);
  strcpy (shadow, s);
  snprintf (data, sizeof data, "%s/data", shadow);
  if ((mkdir (shadow, 0700) == -1 && errno != EEXIST) ||
      (mkdir (data, 0700) == -1 && errno != EEXIST))
    die ("creating %s: %m", data);
  /* A restart without a cut (after a clean quit) goes on with the
   * image as it is.
   */
  snprintf (data, sizeof data, "%s/dir", shadow);
  if (access (data, F_OK) == -1)
    image_dir (true);
  /* nbdkit alone: a program it runs must not take the image over. */
  unsetenv ("POWERCUT_DIR");
}
