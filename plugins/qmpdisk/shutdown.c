/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* nbdkit-qmpdisk-plugin: noticing that nbdkit is shutting down (see
 * shutdown.h).
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/eventfd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "disks.h"
#include "shutdown.h"

/* The signals on which nbdkit shuts down cleanly. */
static const int signals[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP };
#define NR_SIGNALS (sizeof signals / sizeof signals[0])

static struct sigaction old_actions[NR_SIGNALS];
static bool chained[NR_SIGNALS];
static int wake_fd = -1;        /* eventfd, never read: stays readable */
static pthread_t thread;
static bool running;

void
shutdown_begin (void)
{
  uint64_t one = 1;
  int saved = errno;

  if (wake_fd >= 0 && write (wake_fd, &one, sizeof one) == -1) {
    /* Only EAGAIN (counter full) is possible: it is readable then. */
  }
  errno = saved;
}

int
shutdown_fd (void)
{
  return wake_fd;
}

/* nbdkit's handler first, so that its quit flag is set. */
static void
on_signal (int sig, siginfo_t *info, void *context)
{
  size_t i;

  for (i = 0; i < NR_SIGNALS; i++)
    if (signals[i] == sig && chained[i]) {
      if (old_actions[i].sa_flags & SA_SIGINFO)
        old_actions[i].sa_sigaction (sig, info, context);
      else
        old_actions[i].sa_handler (sig);
    }
  shutdown_begin ();
}

static void *
watch (void *arg)
{
  struct pollfd pfd = { .fd = wake_fd, .events = POLLIN };

  while (poll (&pfd, 1, -1) == -1 && errno == EINTR)
    ;
  if (!__atomic_load_n (&running, __ATOMIC_ACQUIRE))
    return NULL;                /* woken by shutdown_watch_stop */
  nbdkit_debug ("qmpdisk: nbdkit is shutting down: "
                "disconnecting from NBD servers");
  disks_disconnect_remote ();
  return NULL;
}

int
shutdown_watch_start (void)
{
  size_t i;
  int err;

  wake_fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd == -1) {
    nbdkit_error ("eventfd: %m");
    return -1;
  }
  __atomic_store_n (&running, true, __ATOMIC_RELEASE);
  err = pthread_create (&thread, NULL, watch, NULL);
  if (err) {
    errno = err;
    nbdkit_error ("qmpdisk: shutdown thread: %m");
    __atomic_store_n (&running, false, __ATOMIC_RELEASE);
    close (wake_fd);
    wake_fd = -1;
    return -1;
  }

  /* Only where nbdkit has a handler: with the default action the
   * process dies anyway, and an ignored signal stops nothing.
   */
  for (i = 0; i < NR_SIGNALS; i++) {
    struct sigaction sa;

    if (sigaction (signals[i], NULL, &old_actions[i]) == -1)
      continue;
    if (!(old_actions[i].sa_flags & SA_SIGINFO) &&
        (old_actions[i].sa_handler == SIG_DFL ||
         old_actions[i].sa_handler == SIG_IGN))
      continue;
    sa = old_actions[i];
    sa.sa_flags |= SA_SIGINFO;
    sa.sa_sigaction = on_signal;
    chained[i] = true;
    if (sigaction (signals[i], &sa, NULL) == -1) {
      nbdkit_debug ("qmpdisk: sigaction %d: %m", signals[i]);
      chained[i] = false;
    }
  }
  return 0;
}

void
shutdown_watch_stop (void)
{
  size_t i;

  for (i = 0; i < NR_SIGNALS; i++)
    if (chained[i]) {
      sigaction (signals[i], &old_actions[i], NULL);
      chained[i] = false;
    }
  if (wake_fd == -1)
    return;
  if (__atomic_exchange_n (&running, false, __ATOMIC_ACQ_REL)) {
    shutdown_begin ();
    pthread_join (thread, NULL);
  }
  close (wake_fd);
  wake_fd = -1;
}
