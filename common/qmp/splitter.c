/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "splitter.h"

void
splitter_init (struct splitter *s, size_t max_size, int max_depth,
               size_t max_skip)
{
  memset (s, 0, sizeof *s);
  s->max_size = max_size;
  s->max_depth = max_depth;
  s->max_skip = max_skip;
}

void
splitter_free (struct splitter *s)
{
  free (s->buf);
  s->buf = NULL;
}

/* Call FN; false if it halted. */
static bool
emit (struct splitter *s, enum splitter_status status,
      const char *data, size_t len, splitter_fn fn, void *opaque)
{
  switch (fn (opaque, status, data, len)) {
  case SPLIT_GO:
    return true;
  case SPLIT_PAUSE:
    s->pause = true;
    return true;
  default:
    return false;
  }
}

/* Forget the current value. */
static void
reset (struct splitter *s)
{
  s->len = s->skipped = 0;
  s->depth = 0;
  s->active = s->scalar = s->in_string = s->escape = false;
  s->skipping = false;
  /* Don't keep a megabyte around for one big message. */
  if (s->cap > 65536) {
    free (s->buf);
    s->buf = NULL;
    s->cap = 0;
  }
}

/* Report the value as bad now and skip the rest of it. */
static bool
give_up (struct splitter *s, enum splitter_status status,
         splitter_fn fn, void *opaque)
{
  s->skipping = true;
  s->skipped = s->len;
  s->len = 0;
  return emit (s, status, NULL, 0, fn, opaque);
}

static bool
append (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (s->skipping) {
    if (++s->skipped > s->max_skip) {
      emit (s, SPLIT_ENDLESS, NULL, 0, fn, opaque);
      return false;
    }
    return true;
  }
  if (s->len >= s->max_size)
    return give_up (s, SPLIT_TOO_LARGE, fn, opaque);
  if (s->len == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    char *p = realloc (s->buf, cap);
    if (p == NULL)
      return false;
    s->buf = p;
    s->cap = cap;
  }
  s->buf[s->len++] = c;
  return true;
}

/* The value ended: hand it over, unless it was already reported. */
static bool
finish (struct splitter *s, splitter_fn fn, void *opaque)
{
  bool ret = true;

  if (!s->skipping)
    ret = emit (s, SPLIT_VALUE, s->buf, s->len, fn, opaque);
  reset (s);
  return ret;
}

static bool
is_space (char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool
is_control (char c)
{
  return (unsigned char) c < 0x20 && !is_space (c);
}

/* One character inside a string: track escapes only. */
static void
string_char (struct splitter *s, char c)
{
  if (s->escape)
    s->escape = false;
  else if (c == '\\')
    s->escape = true;
  else if (c == '"')
    s->in_string = false;
}

/* Results of one step: C used, C to be seen again (it starts the next
 * value), or stop.
 */
enum step { STEP_NEXT, STEP_AGAIN, STEP_STOP };

/* C between values. */
static enum step
start_value (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (is_space (c) || is_control (c))
    return STEP_NEXT;           /* a reset between values: nothing to do */
  if (c == '}' || c == ']')
    return emit (s, SPLIT_STRAY, &c, 1, fn, opaque) ? STEP_NEXT : STEP_STOP;
  s->active = true;
  s->scalar = c != '{' && c != '[';
  s->in_string = c == '"';
  if (!s->scalar)
    s->depth = 1;
  return append (s, c, fn, opaque) ? STEP_NEXT : STEP_STOP;
}

/* C inside a bare scalar: a string ends at its closing quote, a
 * number or word at a delimiter (which starts what follows).
 */
static enum step
scalar_step (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (s->in_string) {
    if (!append (s, c, fn, opaque))
      return STEP_STOP;
    string_char (s, c);
    if (!s->in_string && !finish (s, fn, opaque))
      return STEP_STOP;
    return STEP_NEXT;
  }
  if (is_space (c) || strchr ("{}[]\",:", c) != NULL)
    return finish (s, fn, opaque) ? STEP_AGAIN : STEP_STOP;
  return append (s, c, fn, opaque) ? STEP_NEXT : STEP_STOP;
}

/* C inside an object or array: track strings and brackets. */
static enum step
nested_step (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (!append (s, c, fn, opaque))
    return STEP_STOP;
  if (s->in_string) {
    string_char (s, c);
    return STEP_NEXT;
  }
  switch (c) {
  case '"':
    s->in_string = true;
    break;
  case '{': case '[':
    if (++s->depth > s->max_depth && !s->skipping &&
        !give_up (s, SPLIT_TOO_DEEP, fn, opaque))
      return STEP_STOP;
    break;
  case '}': case ']':
    if (--s->depth == 0 && !finish (s, fn, opaque))
      return STEP_STOP;
    break;
  }
  return STEP_NEXT;
}

/* A control character inside a value: JSON never has one there, so
 * the value is bad; report it unless it was already, and resync.
 */
static enum step
control_step (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  bool ok = s->skipping || emit (s, SPLIT_CONTROL, &c, 1, fn, opaque);

  reset (s);
  return ok ? STEP_NEXT : STEP_STOP;
}

ssize_t
splitter_feed (struct splitter *s, const char *data, size_t n,
               splitter_fn fn, void *opaque)
{
  size_t i = 0;

  while (i < n) {
    enum step r;

    if (!s->active)
      r = start_value (s, data[i], fn, opaque);
    else if (is_control (data[i]))
      r = control_step (s, data[i], fn, opaque);
    else if (s->scalar)
      r = scalar_step (s, data[i], fn, opaque);
    else
      r = nested_step (s, data[i], fn, opaque);
    if (r == STEP_STOP)
      return -1;
    if (r == STEP_NEXT)
      i++;
    if (s->pause) {
      s->pause = false;
      return i;
    }
  }
  return i;
}
