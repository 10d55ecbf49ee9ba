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

bool
splitter_feed (struct splitter *s, const char *data, size_t n,
               splitter_fn fn, void *opaque)
{
  size_t i;

  for (i = 0; i < n; i++) {
    char c = data[i];

    if (!s->active) {
      if (is_space (c))
        continue;
      if (c == '}' || c == ']') {
        if (!fn (opaque, SPLIT_STRAY, &c, 1))
          return false;
        continue;
      }
      s->active = true;
      s->scalar = c != '{' && c != '[';
      s->in_string = c == '"';
      if (!append (s, c))
        return false;
      if (!s->scalar)
        s->depth = 1;
      continue;
    }

    if (s->scalar) {
      if (s->in_string) {       /* a bare string ends at its quote */
        if (!append (s, c))
          return false;
        string_char (s, c);
        if (!s->in_string && !finish (s, fn, opaque))
          return false;
        continue;
      }
      if (is_space (c) || strchr ("{}[]\",:", c) != NULL) {
        /* A bare number or word ends here; C starts what follows. */
        if (!finish (s, fn, opaque))
          return false;
        i--;
        continue;
      }
      if (!append (s, c))
        return false;
      continue;
    }

    if (!append (s, c))
      return false;
    if (s->in_string) {
      string_char (s, c);
      continue;
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
        return false;
      break;
    }
  }
  return true;
}
