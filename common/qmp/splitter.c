/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "splitter.h"

void
splitter_init (struct splitter *s, size_t max_size, int max_depth)
{
  memset (s, 0, sizeof *s);
  s->max_size = max_size;
  s->max_depth = max_depth;
}

void
splitter_free (struct splitter *s)
{
  free (s->buf);
  s->buf = NULL;
}

static bool
append (struct splitter *s, char c)
{
  if (s->too_large || s->too_deep)
    return true;                /* skipping: keep nothing */
  if (s->len >= s->max_size) {
    s->too_large = true;
    return true;
  }
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

static bool
finish (struct splitter *s, splitter_fn fn, void *opaque)
{
  enum splitter_status status = SPLIT_VALUE;
  bool ret;

  if (s->too_large)
    status = SPLIT_TOO_LARGE;
  else if (s->too_deep)
    status = SPLIT_TOO_DEEP;
  ret = fn (opaque, status, s->buf, s->len);
  s->len = 0;
  s->depth = 0;
  s->active = s->scalar = s->in_string = s->escape = false;
  s->too_large = s->too_deep = false;
  /* Don't keep a megabyte around for one big message. */
  if (s->cap > 65536) {
    free (s->buf);
    s->buf = NULL;
    s->cap = 0;
  }
  return ret;
}

static bool
is_space (char c)
{
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
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
  if (is_space (c))
    return STEP_NEXT;
  if (c == '}' || c == ']')
    return fn (opaque, SPLIT_STRAY, &c, 1) ? STEP_NEXT : STEP_STOP;
  s->active = true;
  s->scalar = c != '{' && c != '[';
  s->in_string = c == '"';
  if (!s->scalar)
    s->depth = 1;
  return append (s, c) ? STEP_NEXT : STEP_STOP;
}

/* C inside a bare scalar: a string ends at its closing quote, a
 * number or word at a delimiter (which starts what follows).
 */
static enum step
scalar_step (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (s->in_string) {
    if (!append (s, c))
      return STEP_STOP;
    string_char (s, c);
    if (!s->in_string && !finish (s, fn, opaque))
      return STEP_STOP;
    return STEP_NEXT;
  }
  if (is_space (c) || strchr ("{}[]\",:", c) != NULL)
    return finish (s, fn, opaque) ? STEP_AGAIN : STEP_STOP;
  return append (s, c) ? STEP_NEXT : STEP_STOP;
}

/* C inside an object or array: track strings and brackets. */
static enum step
nested_step (struct splitter *s, char c, splitter_fn fn, void *opaque)
{
  if (!append (s, c))
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
    if (++s->depth > s->max_depth)
      s->too_deep = true;
    break;
  case '}': case ']':
    if (--s->depth == 0 && !finish (s, fn, opaque))
      return STEP_STOP;
    break;
  }
  return STEP_NEXT;
}

bool
splitter_feed (struct splitter *s, const char *data, size_t n,
               splitter_fn fn, void *opaque)
{
  size_t i = 0;

  while (i < n) {
    enum step r;

    if (!s->active)
      r = start_value (s, data[i], fn, opaque);
    else if (s->scalar)
      r = scalar_step (s, data[i], fn, opaque);
    else
      r = nested_step (s, data[i], fn, opaque);
    if (r == STEP_STOP)
      return false;
    if (r == STEP_NEXT)
      i++;
  }
  return true;
}
