/* Parallel I/O through nbdkit: several NBD connections per export,
 * each with many requests in flight (writes, reads, zeroes, trims,
 * flushes, FUA, unaligned), checked against a model of the disk.
 *
 * Usage: test-parallel-io URI FILE [URI FILE ...]
 *
 * Each URI is an export whose data lands in FILE (the backing file),
 * served by one nbdkit that test-parallel-io.sh starts.  Every thread
 * owns a disjoint set of 64 KiB slots and keeps at most one request
 * in flight per slot, so the expected contents are always known; a
 * trimmed range is "unknown" until written again (NBD lets a trim
 * leave anything).  At the end each FILE must match the model.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#define SLOT (64 * 1024)
#define CONNS_PER_DISK 4
#define MAX_IN_FLIGHT 16
#define OPS_PER_CONN 1000
#define MAX_DISKS 8

struct disk {
  const char *uri, *file;
  uint64_t size;
  unsigned char *model;         /* expected contents */
  unsigned char *known;         /* 0 after a trim: anything goes */
};

struct worker;

struct req {
  struct worker *w;
  bool busy;
  int op;                       /* 0 write, 1 read, 2 zero, 3 trim */
  size_t slot;
  uint64_t offset;
  uint32_t count;
  unsigned char *buf;
};

struct worker {
  pthread_t thread;
  struct disk *disk;
  unsigned id, nr_workers;      /* owns slots with slot % nr == id */
  unsigned seed;
  struct nbd_handle *h;
  bool *slot_busy;
  struct req reqs[MAX_IN_FLIGHT];
  unsigned done, failed;
  char errmsg[256];
};

static struct disk disks[MAX_DISKS];
static size_t nr_disks;

static void
fail_worker (struct worker *w, const char *fs, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
fail_worker (struct worker *w, const char *fs, ...)
{
  va_list args;

  if (w->failed++ == 0) {
    va_start (args, fs);
    vsnprintf (w->errmsg, sizeof w->errmsg, fs, args);
    va_end (args);
  }
}

/* Completion of any request: check reads, update the model. */
static int
completed (void *opaque, int *error)
{
  struct req *r = opaque;
  struct worker *w = r->w;
  struct disk *d = w->disk;
  uint32_t i;

  if (*error) {
    fail_worker (w, "%s: op %d at %" PRIu64 "+%" PRIu32 " failed: %s",
                 d->uri, r->op, r->offset, r->count, strerror (*error));
  }
  else {
    switch (r->op) {
    case 0:
      memcpy (d->model + r->offset, r->buf, r->count);
      memset (d->known + r->offset, 1, r->count);
      break;
    case 1:
      for (i = 0; i < r->count; i++)
        if (d->known[r->offset + i] && r->buf[i] != d->model[r->offset + i]) {
          fail_worker (w, "%s: read at %" PRIu64 ": byte %" PRIu64
                       " is 0x%02x, expected 0x%02x", d->uri, r->offset,
                       r->offset + i, r->buf[i], d->model[r->offset + i]);
          break;
        }
      break;
    case 2:
      memset (d->model + r->offset, 0, r->count);
      memset (d->known + r->offset, 1, r->count);
      break;
    case 3:
      memset (d->known + r->offset, 0, r->count);
      break;
    }
  }
  w->slot_busy[r->slot] = false;
  r->busy = false;
  w->done++;
  return 1;                     /* retire the command */
}

static void
issue (struct worker *w, struct req *r)
{
  struct disk *d = w->disk;
  size_t nr_slots = d->size / SLOT, slot;
  uint32_t in_slot, i;
  nbd_completion_callback cb = { .callback = completed, .user_data = r };
  uint32_t flags = 0;
  int64_t cookie = -1;
  int tries;

  for (tries = 0; tries < 64; tries++) {
    slot = rand_r (&w->seed) % nr_slots;
    slot -= slot % w->nr_workers;
    slot += w->id;
    if (slot < nr_slots && !w->slot_busy[slot])
      break;
  }
  if (tries == 64)
    return;

  in_slot = rand_r (&w->seed) % SLOT;
  r->slot = slot;
  r->offset = (uint64_t) slot * SLOT + in_slot;
  /* Mostly small and 512-aligned, sometimes anything. */
  if (rand_r (&w->seed) % 4) {
    r->offset &= ~(uint64_t) 511;
    in_slot &= ~511u;
    r->count = 512 * (1 + rand_r (&w->seed) % ((SLOT - in_slot) / 512));
  }
  else
    r->count = 1 + rand_r (&w->seed) % (SLOT - in_slot);
  r->op = rand_r (&w->seed) % 10;
  r->op = r->op < 4 ? 0 : r->op < 8 ? 1 : r->op < 9 ? 2 : 3;
  if (rand_r (&w->seed) % 40 == 0 && r->op != 1)
    flags |= LIBNBD_CMD_FLAG_FUA;

  r->busy = true;
  w->slot_busy[slot] = true;
  switch (r->op) {
  case 0:
    for (i = 0; i < r->count; i++)
      r->buf[i] = rand_r (&w->seed);
    cookie = nbd_aio_pwrite (w->h, r->buf, r->count, r->offset, cb, flags);
    break;
  case 1:
    cookie = nbd_aio_pread (w->h, r->buf, r->count, r->offset, cb, 0);
    break;
  case 2:
    if (rand_r (&w->seed) % 2)
      flags |= LIBNBD_CMD_FLAG_NO_HOLE;
    cookie = nbd_aio_zero (w->h, r->count, r->offset, cb, flags);
    break;
  case 3:
    cookie = nbd_aio_trim (w->h, r->count, r->offset, cb, flags);
    break;
  }
  if (cookie == -1) {
    fail_worker (w, "%s: issuing op %d: %s", d->uri, r->op, nbd_get_error ());
    r->busy = false;
    w->slot_busy[slot] = false;
  }
}

static void *
run_worker (void *arg)
{
  struct worker *w = arg;
  unsigned issued = 0, i;

  while (w->done < OPS_PER_CONN && !w->failed) {
    for (i = 0; i < MAX_IN_FLIGHT && issued < OPS_PER_CONN; i++)
      if (!w->reqs[i].busy) {
        unsigned before = w->failed;
        issue (w, &w->reqs[i]);
        if (w->reqs[i].busy)
          issued++;
        if (w->failed != before)
          return NULL;
      }
    if (nbd_aio_in_flight (w->h) > 0 && nbd_poll (w->h, -1) == -1) {
      fail_worker (w, "%s: nbd_poll: %s", w->disk->uri, nbd_get_error ());
      return NULL;
    }
    if (issued >= OPS_PER_CONN && nbd_aio_in_flight (w->h) == 0)
      break;
    /* Now and then a flush, synchronously, with requests in flight
     * on the other connections.
     */
    if (rand_r (&w->seed) % 200 == 0 && nbd_aio_in_flight (w->h) == 0 &&
        nbd_flush (w->h, 0) == -1)
      fail_worker (w, "%s: flush: %s", w->disk->uri, nbd_get_error ());
  }
  return NULL;
}

int
main (int argc, char *argv[])
{
  struct worker workers[MAX_DISKS * CONNS_PER_DISK];
  size_t nr_workers = 0, i, j;
  int status = EXIT_SUCCESS;

  if (argc < 3 || (argc - 1) % 2 || (argc - 1) / 2 > MAX_DISKS) {
    fprintf (stderr, "usage: %s URI FILE [URI FILE ...]\n", argv[0]);
    exit (EXIT_FAILURE);
  }
  for (i = 1; i < (size_t) argc; i += 2) {
    struct disk *d = &disks[nr_disks++];
    int fd;

    d->uri = argv[i];
    d->file = argv[i + 1];
    fd = open (d->file, O_RDONLY);
    if (fd == -1) {
      perror (d->file);
      exit (EXIT_FAILURE);
    }
    d->size = lseek (fd, 0, SEEK_END);
    d->model = malloc (d->size);
    d->known = calloc (d->size, 1);
    if (d->model == NULL || d->known == NULL ||
        pread (fd, d->model, d->size, 0) != (ssize_t) d->size) {
      perror (d->file);
      exit (EXIT_FAILURE);
    }
    memset (d->known, 1, d->size);
    close (fd);
    if (d->size < SLOT * CONNS_PER_DISK) {
      fprintf (stderr, "%s: too small\n", d->file);
      exit (EXIT_FAILURE);
    }
  }

  for (i = 0; i < nr_disks; i++)
    for (j = 0; j < CONNS_PER_DISK; j++) {
      struct worker *w = &workers[nr_workers++];
      size_t k;

      memset (w, 0, sizeof *w);
      w->disk = &disks[i];
      w->id = j;
      w->nr_workers = CONNS_PER_DISK;
      w->seed = 1234 + nr_workers;
      w->slot_busy = calloc (disks[i].size / SLOT, sizeof (bool));
      w->h = nbd_create ();
      if (w->slot_busy == NULL || w->h == NULL ||
          nbd_connect_uri (w->h, disks[i].uri) == -1) {
        fprintf (stderr, "%s: %s\n", disks[i].uri, nbd_get_error ());
        exit (EXIT_FAILURE);
      }
      if (nbd_can_multi_conn (w->h) != 1 || nbd_is_read_only (w->h) != 0 ||
          nbd_get_size (w->h) != (int64_t) disks[i].size) {
        fprintf (stderr, "%s: unexpected export flags or size\n",
                 disks[i].uri);
        exit (EXIT_FAILURE);
      }
      for (k = 0; k < MAX_IN_FLIGHT; k++) {
        w->reqs[k].w = w;
        w->reqs[k].buf = malloc (SLOT);
        if (w->reqs[k].buf == NULL) {
          perror ("malloc");
          exit (EXIT_FAILURE);
        }
      }
    }

  for (i = 0; i < nr_workers; i++) {
    int err = pthread_create (&workers[i].thread, NULL, run_worker,
                              &workers[i]);
    if (err) {
      errno = err;
      perror ("pthread_create");
      exit (EXIT_FAILURE);
    }
  }
  for (i = 0; i < nr_workers; i++) {
    pthread_join (workers[i].thread, NULL);
    if (workers[i].failed) {
      fprintf (stderr, "FAIL: %s\n", workers[i].errmsg);
      status = EXIT_FAILURE;
    }
    /* multi-conn: a flush on one connection covers all of them. */
    if (nbd_flush (workers[i].h, 0) == -1 ||
        nbd_shutdown (workers[i].h, 0) == -1) {
      fprintf (stderr, "%s: %s\n", workers[i].disk->uri, nbd_get_error ());
      status = EXIT_FAILURE;
    }
    nbd_close (workers[i].h);
    for (j = 0; j < MAX_IN_FLIGHT; j++)
      free (workers[i].reqs[j].buf);
    free (workers[i].slot_busy);
  }

  /* The backing files hold the model. */
  for (i = 0; i < nr_disks && status == EXIT_SUCCESS; i++) {
    struct disk *d = &disks[i];
    unsigned char *buf = malloc (d->size);
    int fd = open (d->file, O_RDONLY);
    uint64_t k, known = 0;

    if (buf == NULL || fd == -1 ||
        pread (fd, buf, d->size, 0) != (ssize_t) d->size) {
      perror (d->file);
      exit (EXIT_FAILURE);
    }
    for (k = 0; k < d->size; k++) {
      if (!d->known[k])
        continue;
      known++;
      if (buf[k] != d->model[k]) {
        fprintf (stderr, "FAIL: %s: byte %" PRIu64 " is 0x%02x, "
                 "expected 0x%02x\n", d->file, k, buf[k], d->model[k]);
        status = EXIT_FAILURE;
        break;
      }
    }
    printf ("%s: %" PRIu64 " of %" PRIu64 " bytes checked\n",
            d->file, known, d->size);
    close (fd);
    free (buf);
  }
  return status;
}
