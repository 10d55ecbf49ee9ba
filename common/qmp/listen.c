/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "cleanup.h"
#include "listen.h"

/* Is PATH a socket nobody listens on (left behind by a crash)? */
static bool
is_stale_socket (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd, r;

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return false;
  strncpy (addr.sun_path, path, sizeof addr.sun_path - 1);
  r = connect (fd, (struct sockaddr *) &addr, sizeof addr);
  close (fd);
  return r == -1 && errno == ECONNREFUSED;
}

static int
check_path (const char *path)
{
  struct stat st;

  if (strlen (path) >= sizeof ((struct sockaddr_un *) 0)->sun_path) {
    nbdkit_error ("qmp: socket path too long: %s", path);
    return -1;
  }
  if (lstat (path, &st) == -1)
    return 0;
  if (!S_ISSOCK (st.st_mode)) {
    nbdkit_error ("qmp: %s exists and is not a socket", path);
    return -1;
  }
  if (!is_stale_socket (path)) {
    nbdkit_error ("qmp: %s is in use by another process", path);
    return -1;
  }
  if (unlink (path) == -1) {
    nbdkit_error ("qmp: cannot remove stale socket %s: %m", path);
    return -1;
  }
  return 0;
}

int
qmp_listen_unix (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd;

  if (check_path (path) == -1)
    return -1;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    nbdkit_error ("qmp: socket: %m");
    return -1;
  }
  strncpy (addr.sun_path, path, sizeof addr.sun_path - 1);
  /* chmod between bind and listen: nobody can connect before listen. */
  if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == -1 ||
      chmod (path, 0600) == -1 ||
      listen (fd, 16) == -1) {
    nbdkit_error ("qmp: %s: %m", path);
    close (fd);
    return -1;
  }
  return fd;
}

int
qmp_listen_tcp (const char *spec)
{
  const char *colon = strrchr (spec, ':');
  CLEANUP_FREE char *host = NULL;
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_ADDRCONFIG };
  struct addrinfo *res, *ai;
  int fd = -1, r, one = 1;

  if (colon == NULL || colon == spec || colon[1] == '\0') {
    nbdkit_error ("qmp=tcp:%s: expected tcp:ADDRESS:PORT", spec);
    return -1;
  }
  if (spec[0] == '[' && colon[-1] == ']')
    host = strndup (spec + 1, colon - spec - 2);
  else
    host = strndup (spec, colon - spec);
  if (host == NULL) {
    nbdkit_error ("strndup: %m");
    return -1;
  }
  r = getaddrinfo (host, colon + 1, &hints, &res);
  if (r) {
    nbdkit_error ("qmp=tcp:%s: %s", spec, gai_strerror (r));
    return -1;
  }
  for (ai = res; ai; ai = ai->ai_next) {
    fd = socket (ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                 ai->ai_protocol);
    if (fd == -1)
      continue;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind (fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen (fd, 16) == 0)
      break;
    close (fd);
    fd = -1;
  }
  if (fd == -1)
    nbdkit_error ("qmp=tcp:%s: %m", spec);
  freeaddrinfo (res);
  return fd;
}
