/* Growable arrays of any element type.
 *
 * DEFINE_VECTOR_TYPE (int_vector, int) declares
 *   typedef struct { int *ptr; size_t len, cap; } int_vector;
 * and static functions on it:
 *   int_vector_reserve (v, n)   room for N more elements: 0, or -1
 *                               with errno = ENOMEM (nothing changed)
 *   int_vector_append (v, x)    add X at the end: 0 or -1 (ENOMEM)
 *   int_vector_insert (v, x, i) add X before element I: 0 or -1
 *   int_vector_remove (v, i)    drop element I, keeping the order
 *   int_vector_reset (v)        free the array; V is empty again
 * An append after a successful reserve of enough room never fails.
 * Initialise with = empty_vector.
 */
#ifndef NC_VECTOR_H
#define NC_VECTOR_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define empty_vector { .ptr = NULL, .len = 0, .cap = 0 }

#define DEFINE_VECTOR_TYPE(name, type)                                  \
  typedef struct {                                                      \
    type *ptr;                                                          \
    size_t len, cap;                                                    \
  } name;                                                               \
                                                                        \
  static inline __attribute__ ((unused)) int                            \
  name##_reserve (name *v, size_t n)                                    \
  {                                                                     \
    size_t want, cap;                                                   \
    type *p;                                                            \
                                                                        \
    if (n <= v->cap - v->len)                                           \
      return 0;                                                         \
    if (n > SIZE_MAX / sizeof (type) - v->len) {                        \
      errno = ENOMEM;                                                   \
      return -1;                                                        \
    }                                                                   \
    want = v->len + n;                                                  \
    cap = v->cap ? v->cap : 4;                                          \
    while (cap < want)                                                  \
      cap = cap <= SIZE_MAX / 2 / sizeof (type) ? cap * 2 : want;       \
    p = realloc (v->ptr, cap * sizeof (type));                          \
    if (p == NULL) {                                                    \
      errno = ENOMEM;                                                   \
      return -1;                                                        \
    }                                                                   \
    v->ptr = p;                                                         \
    v->cap = cap;                                                       \
    return 0;                                                           \
  }                                                                     \
                                                                        \
  static inline __attribute__ ((unused)) int                            \
  name##_insert (name *v, type elem, size_t i)                          \
  {                                                                     \
    if (name##_reserve (v, 1) == -1)                                    \
      return -1;                                                        \
    memmove (&v->ptr[i + 1], &v->ptr[i], (v->len - i) * sizeof (type)); \
    v->ptr[i] = elem;                                                   \
    v->len++;                                                           \
    return 0;                                                           \
  }                                                                     \
                                                                        \
  static inline __attribute__ ((unused)) int                            \
  name##_append (name *v, type elem)                                    \
  {                                                                     \
    return name##_insert (v, elem, v->len);                             \
  }                                                                     \
                                                                        \
  static inline __attribute__ ((unused)) void                           \
  name##_remove (name *v, size_t i)                                     \
  {                                                                     \
    memmove (&v->ptr[i], &v->ptr[i + 1],                                \
             (v->len - i - 1) * sizeof (type));                         \
    v->len--;                                                           \
  }                                                                     \
                                                                        \
  static inline __attribute__ ((unused)) void                           \
  name##_reset (name *v)                                                \
  {                                                                     \
    free (v->ptr);                                                      \
    v->ptr = NULL;                                                      \
    v->len = v->cap = 0;                                                \
  }

#endif /* NC_VECTOR_H */
