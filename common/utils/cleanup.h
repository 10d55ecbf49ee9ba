/* Cleanup attributes for frees and locks, so that every return path
 * releases what it holds.
 */
#ifndef NC_CLEANUP_H
#define NC_CLEANUP_H

#include <pthread.h>
#include <stdlib.h>
#include <assert.h>

extern void cleanup_free (void *ptr);
extern void cleanup_mutex_unlock (pthread_mutex_t **ptr);
extern void cleanup_rwlock_unlock (pthread_rwlock_t **ptr);

#define CLEANUP_FREE __attribute__ ((cleanup (cleanup_free)))

#define NC_CONCAT_(a, b) a##b
#define NC_CONCAT(a, b) NC_CONCAT_ (a, b)
#define NC_UNIQUE(name) NC_CONCAT (name, __LINE__)

/* Holds MUTEX until the end of the enclosing scope. */
#define ACQUIRE_LOCK_FOR_CURRENT_SCOPE(mutex)                          \
  __attribute__ ((cleanup (cleanup_mutex_unlock)))                      \
  pthread_mutex_t *NC_UNIQUE (_lock) = (mutex);                         \
  do {                                                                  \
    int _r = pthread_mutex_lock (NC_UNIQUE (_lock));                    \
    assert (_r == 0);                                                   \
    (void) _r;                                                          \
  } while (0)

#define ACQUIRE_RDLOCK_FOR_CURRENT_SCOPE(rwlock)                       \
  __attribute__ ((cleanup (cleanup_rwlock_unlock)))                     \
  pthread_rwlock_t *NC_UNIQUE (_rdlock) = (rwlock);                     \
  do {                                                                  \
    int _r = pthread_rwlock_rdlock (NC_UNIQUE (_rdlock));               \
    assert (_r == 0);                                                   \
    (void) _r;                                                          \
  } while (0)

#define ACQUIRE_WRLOCK_FOR_CURRENT_SCOPE(rwlock)                       \
  __attribute__ ((cleanup (cleanup_rwlock_unlock)))                     \
  pthread_rwlock_t *NC_UNIQUE (_wrlock) = (rwlock);                     \
  do {                                                                  \
    int _r = pthread_rwlock_wrlock (NC_UNIQUE (_wrlock));               \
    assert (_r == 0);                                                   \
    (void) _r;                                                          \
  } while (0)

#endif /* NC_CLEANUP_H */
