#include <config.h>

#include <stdlib.h>
#include <pthread.h>

#include "cleanup.h"

void
cleanup_free (void *ptr)
{
  free (* (void **) ptr);
}

void
cleanup_mutex_unlock (pthread_mutex_t **ptr)
{
  int r = pthread_mutex_unlock (*ptr);
  assert (r == 0);
  (void) r;
}
