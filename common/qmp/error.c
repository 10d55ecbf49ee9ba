/* struct qmp_error: the one way an error travels on the control path,
 * from whatever found it to the QMP reply.  Kept apart from the rest of
 * the monitor so that code with no monitor (the filter's model and its
 * unit tests) can carry errors too.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "qmp.h"

void
qmp_error_set (struct qmp_error *err, const char *class,
               const char *fmt, ...)
{
  va_list ap;

  if (err->class)               /* keep the first error */
    return;
  err->class = class;
  va_start (ap, fmt);
  if (vasprintf (&err->desc, fmt, ap) == -1)
    err->desc = NULL;
  va_end (ap);
}

void
qmp_error_clear (struct qmp_error *err)
{
  free (err->desc);
  err->desc = NULL;
  err->class = NULL;
}
