/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* The node registry (see node.h). */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "cleanup.h"
#include "bitmap.h"
#include "core/node.h"

/* Guards the list and connection counts against NBD opens. */
static pthread_mutex_t nodes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *nodes;

static const struct node_events *subscribers[NODE_MAX_SUBSCRIBERS];
static size_t nr_subscribers;

static pthread_rwlockattr_t barrier_attr;

static void __attribute__ ((constructor))
init_barrier_attr (void)
{
  pthread_rwlockattr_init (&barrier_attr);
  pthread_rwlockattr_setkind_np (&barrier_attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
}

int
nodes_subscribe (const struct node_events *events)
{
  if (nr_subscribers == NODE_MAX_SUBSCRIBERS)
    return -1;
  subscribers[nr_subscribers++] = events;
  return 0;
}

static struct node *
find_locked (const char *name)
{
  struct node *n;

  for (n = nodes; n; n = n->next)
    if (strcmp (n->name, name) == 0)
      return n;
  return NULL;
}

struct node *
nodes_find (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  return find_locked (name);
}

struct node *
nodes_lookup (const char *name, struct qmp_error *err)
{
  struct node *n = nodes_find (name);

  if (n == NULL)
    qmp_error (err, "Cannot find device='%s' nor node-name='%s'", name, name);
  return n;
}

struct node *
nodes_list (void)
{
  return nodes;
}

static void
free_node (struct node *n)
{
  struct dirty_bitmap *d;

  while ((d = n->bitmaps) != NULL) {
    n->bitmaps = d->next;
    dirty_bitmap_free (d);
  }
  pthread_rwlock_destroy (&n->barrier);
  bitmap_ptrs_reset (&n->recording);
  node_write_hooks_reset (&n->hooks);
  free (n->name);
  free (n);
}

static void
unlink_and_free (struct node *n)
{
  struct node **pp;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
    for (pp = &nodes; *pp != n; pp = &(*pp)->next)
      ;
    *pp = n->next;
  }
  free_node (n);
}

struct node *
nodes_add (const char *name, uint64_t size, struct qmp_error *err)
{
  struct node *n = calloc (1, sizeof *n), **pp;
  size_t i;

  if (n == NULL || (n->name = strdup (name)) == NULL) {
    free (n);
    qmp_error (err, "Cannot add node '%s': %s", name, strerror (ENOMEM));
    return NULL;
  }
  n->size = size;
  pthread_rwlock_init (&n->barrier, &barrier_attr);
  {
    /* Keep the order of addition, as the plugin lists its disks. */
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
    for (pp = &nodes; *pp; pp = &(*pp)->next)
      ;
    *pp = n;
  }
  for (i = 0; i < nr_subscribers; i++)
    if (subscribers[i]->added && subscribers[i]->added (n, err) == -1) {
      /* Those that accepted it see it go again. */
      while (i-- > 0)
        if (subscribers[i]->removing)
          subscribers[i]->removing (n);
      unlink_and_free (n);
      return NULL;
    }
  return n;
}

int
nodes_resize (struct node *n, uint64_t size)
{
  struct dirty_bitmap *d;
  size_t i;
  int r = 0;

  pthread_rwlock_wrlock (&n->barrier);
  n->size = size;
  for (d = n->bitmaps; d; d = d->next)
    if (bitmap_resize (d->bm, size) == -1) {
      d->inconsistent = true;   /* its bits no longer fit the disk */
      r = -1;
    }
  node_update_recording (n);
  pthread_rwlock_unlock (&n->barrier);
  for (i = 0; i < nr_subscribers; i++)
    if (subscribers[i]->resized)
      subscribers[i]->resized (n);
  if (r == -1)
    errno = ENOMEM;
  return r;
}

void
nodes_remove (struct node *n)
{
  size_t i;

  for (i = 0; i < nr_subscribers; i++)
    if (subscribers[i]->removing)
      subscribers[i]->removing (n);
  unlink_and_free (n);
}

void
nodes_free_all (void)
{
  struct node *n;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  while ((n = nodes) != NULL) {
    nodes = n->next;
    free_node (n);
  }
}

struct node *
nodes_open (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  struct node *n = find_locked (name);

  if (n)
    n->connections++;
  return n;
}

void
nodes_close (struct node *n)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  n->connections--;
}

void
nodes_barrier_raise (void)
{
  struct node *n;

  for (n = nodes; n; n = n->next)
    pthread_rwlock_wrlock (&n->barrier);
}

void
nodes_barrier_lower (void)
{
  struct node *n;

  for (n = nodes; n; n = n->next)
    pthread_rwlock_unlock (&n->barrier);
}

int
node_reserve_recording (struct node *n, size_t extra)
{
  struct dirty_bitmap *d;
  size_t nr = extra;

  for (d = n->bitmaps; d; d = d->next)
    nr++;
  return bitmap_ptrs_reserve (&n->recording, nr - n->recording.len);
}

void
node_update_recording (struct node *n)
{
  struct dirty_bitmap *d;

  /* Persistent ones first: the mark observer looks only at those. */
  n->recording.len = 0;
  for (d = n->bitmaps; d; d = d->next)
    if (dirty_bitmap_records (d) && d->persistent) {
      assert (n->recording.len < n->recording.cap);
      n->recording.ptr[n->recording.len++] = d->bm;
    }
  n->nr_persistent = n->recording.len;
  for (d = n->bitmaps; d; d = d->next)
    if (dirty_bitmap_records (d) && !d->persistent) {
      assert (n->recording.len < n->recording.cap);
      n->recording.ptr[n->recording.len++] = d->bm;
    }
}

void
node_set_mark_observer (struct node *n, node_mark_observer_fn fn,
                        void *opaque)
{
  n->observer = fn;
  n->observer_opaque = opaque;
}

int
node_add_write_hook (struct node *n, node_write_hook_fn fn, void *opaque)
{
  return node_write_hooks_append (&n->hooks,
                                  (struct node_write_hook) { fn, opaque });
}

void
node_remove_write_hook (struct node *n, void *opaque)
{
  size_t i;

  for (i = 0; i < n->hooks.len; i++)
    if (n->hooks.ptr[i].opaque == opaque) {
      node_write_hooks_remove (&n->hooks, i);
      return;
    }
}

int
node_write_begin (struct node *n, uint64_t offset, uint64_t len)
{
  size_t i;

  pthread_rwlock_rdlock (&n->barrier);
  /* The observer hears of the range before any of its bits is set, so
   * a concurrent write that finds them set knows it was recorded.
   */
  if (n->observer)
    for (i = 0; i < n->nr_persistent; i++)
      if (!bitmap_all_dirty (n->recording.ptr[i], offset, len)) {
        if (n->observer (n->observer_opaque, offset, len) == -1) {
          pthread_rwlock_unlock (&n->barrier);
          return -1;
        }
        break;
      }
  for (i = 0; i < n->recording.len; i++)
    if (bitmap_set_range (n->recording.ptr[i], offset, len) == -1) {
      pthread_rwlock_unlock (&n->barrier);
      return -1;
    }
  return 0;
}

int
node_run_write_hooks (struct node *n, struct nbdkit_next_ops *next,
                      uint64_t offset, uint32_t count, int *err)
{
  size_t i;

  for (i = 0; i < n->hooks.len; i++)
    if (n->hooks.ptr[i].fn (n->hooks.ptr[i].opaque, next, offset, count,
                            err) == -1)
      return -1;
  return 0;
}

void
node_write_end (struct node *n)
{
  pthread_rwlock_unlock (&n->barrier);
}
