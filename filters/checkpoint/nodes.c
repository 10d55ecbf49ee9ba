#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <assert.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "cleanup.h"
#include "bitmap.h"
#include "nodes.h"
#include "bitmaps.h"
#include "persist.h"

const char *single_node_name = "disk";
const struct qmp_disk_services *disk_services;

static pthread_mutex_t nodes_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node *nodes;

static struct node *
find_locked (const char *name)
{
  struct node *n;

  for (n = nodes; n; n = n->next)
    if (strcmp (n->name, name) == 0)
      return n;
  return NULL;
}

static pthread_rwlockattr_t barrier_attr;

static void __attribute__ ((constructor))
init_barrier_attr (void)
{
  pthread_rwlockattr_init (&barrier_attr);
  pthread_rwlockattr_setkind_np (&barrier_attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
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
  free (n->recording);
  free (n->name);
  free (n);
}

static struct node *
add_locked (const char *name, uint64_t size)
{
  struct node *n = calloc (1, sizeof *n), **pp;

  if (n == NULL || (n->name = strdup (name)) == NULL) {
    free (n);
    nbdkit_error ("checkpoint: node %s: %m", name);
    return NULL;
  }
  n->size = size;
  pthread_rwlock_init (&n->barrier, &barrier_attr);
  /* Keep the order of addition, as the plugin lists its disks. */
  for (pp = &nodes; *pp; pp = &(*pp)->next)
    ;
  *pp = n;
  return n;
}

int
nodes_init_single (uint64_t size)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  return add_locked (single_node_name, size) ? 0 : -1;
}

int
nodes_init_from_plugin (void)
{
  json_t *list = disk_services->list_nodes (), *info;
  size_t i;
  int r = 0;

  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  json_array_foreach (list, i, info) {
    const char *name = json_string_value (json_object_get (info, "node-name"));
    json_int_t size = json_integer_value (
      json_object_get (json_object_get (info, "image"), "virtual-size"));
    if (name == NULL || add_locked (name, size) == NULL)
      r = -1;
  }
  json_decref (list);
  return r;
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
nodes_open (const char *exportname)
{
  CLEANUP_FREE char *resolved = NULL;
  const char *name = single_node_name;
  struct node *n;

  if (disk_services) {
    resolved = disk_services->resolve_export (exportname);
    if (resolved == NULL)
      return NULL;
    name = resolved;
  }
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  n = find_locked (name);
  if (n)
    n->connections++;
  return n;
}

void
nodes_close (struct node *node)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  node->connections--;
}

struct node *
nodes_find (const char *name)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  return find_locked (name);
}

void
nodes_foreach (void (*fn) (struct node *n, void *opaque), void *opaque)
{
  struct node *n;

  for (n = nodes; n; n = n->next)
    fn (n, opaque);
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
nodes_reserve_recording (struct node *n, size_t extra)
{
  struct dirty_bitmap *d;
  struct bitmap **rec;
  size_t nr = extra;

  for (d = n->bitmaps; d; d = d->next)
    nr++;
  if (nr <= n->recording_cap)
    return 0;
  rec = realloc (n->recording, nr * sizeof *rec);
  if (rec == NULL)
    return -1;
  n->recording = rec;
  n->recording_cap = nr;
  return 0;
}

void
nodes_update_recording (struct node *n)
{
  struct dirty_bitmap *d;
  size_t nr = 0;

  for (d = n->bitmaps; d; d = d->next)
    if (d->recording && !d->inconsistent) {
      assert (nr < n->recording_cap);
      n->recording[nr++] = d->bm;
    }
  n->nr_recording = nr;
}

int
nodes_write_begin (struct node *n, uint64_t offset, uint64_t len)
{
  size_t i;

  pthread_rwlock_rdlock (&n->barrier);
  for (i = 0; i < n->nr_recording; i++)
    if (bitmap_set_range (n->recording[i], offset, len) == -1) {
      pthread_rwlock_unlock (&n->barrier);
      return -1;
    }
  return 0;
}

void
nodes_write_end (struct node *n)
{
  pthread_rwlock_unlock (&n->barrier);
}

json_t *
nodes_describe_single (void)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  json_t *list = json_array ();
  struct node *n;

  for (n = nodes; n; n = n->next)
    json_array_append_new (list, json_pack (
      "{s:s,s:s,s:s,s:b,s:{s:I}}",
      "node-name", n->name, "drv", "nbdkit", "file", "",
      "ro", false, "image", "virtual-size", (json_int_t) n->size));
  return list;
}

/* Hooks called by the plugin, with the monitor lock held. */

static bool
hook_may_remove (const char *name, char **why)
{
  struct node *n = nodes_find (name);

  if (n && (n->bitmaps || n->backups)) {
    if (asprintf (why, "Node '%s' has %s: end or remove them first", name,
                  n->backups ? "active backups" : "dirty bitmaps") == -1)
      *why = NULL;
    return false;
  }
  return true;
}

static void
unlink_node (struct node *n)
{
  ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
  struct node **pp;

  for (pp = &nodes; *pp; pp = &(*pp)->next)
    if (*pp == n) {
      *pp = n->next;
      free_node (n);
      return;
    }
}

/* A disk added at run time: a node, with its saved bitmaps if any. */
static bool
hook_added (const char *name, uint64_t size, char **why)
{
  struct node *n;

  {
    ACQUIRE_LOCK_FOR_CURRENT_SCOPE (&nodes_lock);
    n = add_locked (name, size);
  }
  if (n == NULL) {
    *why = strdup ("out of memory");
    return false;
  }
  if (persist_load_node (n, why) == -1) {
    unlink_node (n);
    return false;
  }
  return true;
}

static void
hook_removed (const char *name)
{
  struct node *n = nodes_find (name);

  if (n) {
    persist_save_node_clean (n);
    unlink_node (n);
  }
}

static bool
hook_may_resize (const char *name, uint64_t size, char **why)
{
  struct node *n = nodes_find (name);
  struct dirty_bitmap *d;

  if (n && n->backups) {
    if (asprintf (why, "Cannot resize '%s' during a backup", name) == -1)
      *why = NULL;
    return false;
  }
  if (n && size < n->size)
    for (d = n->bitmaps; d; d = d->next)
      if (dirty_bitmap_busy (d)) {
        if (asprintf (why, "Cannot shrink '%s' while bitmap '%s' is busy",
                      name, d->name) == -1)
          *why = NULL;
        return false;
      }
  return true;
}

/* Bitmaps follow the disk's size: new chunks clean, cut ones gone. */
static void
hook_resized (const char *name, uint64_t size)
{
  struct node *n = nodes_find (name);
  struct dirty_bitmap *d;

  if (n == NULL)
    return;
  pthread_rwlock_wrlock (&n->barrier);
  n->size = size;
  for (d = n->bitmaps; d; d = d->next)
    if (bitmap_resize (d->bm, size) == -1) {
      nbdkit_error ("checkpoint: resizing bitmap %s: %m", d->name);
      d->inconsistent = true;
    }
  nodes_update_recording (n);
  pthread_rwlock_unlock (&n->barrier);
  persist_save_metadata ();
}

const struct qmp_node_hooks node_hooks = {
  .may_remove = hook_may_remove,
  .added = hook_added,
  .removed = hook_removed,
  .may_resize = hook_may_resize,
  .resized = hook_resized,
};
