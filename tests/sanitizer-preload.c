/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Preloaded into nbdkit together with the sanitizer runtime (see
 * sanitizer-nbdkit and functions.sh), only in sanitizer builds.  Four
 * things, all only about running under a sanitizer:
 *
 * 1. swift_demangle.  A preloaded runtime initialises on the first
 * malloc, and in Debian's nbdkit that is in the constructor of
 * libp11-kit (linked through gnutls), inside newlocale (), which holds
 * glibc's __libc_setlocale_lock for writing.  The runtime's initialisation
 * looks up swift_demangle with dlsym and clears the failure with
 * dlerror (), which translates the message through gettext, which
 * takes the same lock for reading: the non-recursive rwlock's reader
 * count goes negative, and the next writer (libp11-kit's destructor
 * calling freelocale () at exit) waits forever.  The same happens to
 * every program linked with gnutls (qemu-io, nbdinfo) run with the
 * runtime preloaded.
 *
 * Defining swift_demangle makes that dlsym succeed, so there is no
 * message to translate and the lock is not taken.  The runtime calls
 * it only for Swift symbol names; NULL means "not demangled", and the
 * runtime goes on with its own C++ demangler.
 */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

__attribute__ ((visibility ("default")))
char *swift_demangle (const char *mangled, size_t mangled_len,
                      char *out, size_t *out_len, uint32_t flags);

char *
swift_demangle (const char *mangled, size_t mangled_len,
                char *out, size_t *out_len, uint32_t flags)
{
  return NULL;
}

/* 2. dlclose does nothing.  nbdkit unloads the plugin and the filters
 * before it exits, and LeakSanitizer runs after that: a leak in a
 * module would be reported with its frames as "<unknown module>".
 * Keeping the modules mapped lets the reports name our functions (and
 * lets ThreadSanitizer symbolise races found late).  The runtime's own
 * dlclose interceptor, first in the search order, still runs and calls
 * this one as the next definition.
 */
__attribute__ ((visibility ("default")))
int dlclose (void *handle);

int
dlclose (void *handle)
{
  return 0;
}

/* 3. The leak check at exit, without changing the exit status.
 * sanitizer-nbdkit turns off the runtime's own check at exit
 * (leak_check_at_exit=0), which would exit with an error status when it
 * finds a leak: nbdkit 1.32 itself leaks a connection (with the
 * filter's and plugin's handles) still open when it shuts down, and
 * tests check the exit status of nbdkit after quit.  This check only
 * writes the report (to the log_path file); functions.sh then fails
 * the test for every leak that nbdkit did not allocate itself.  It runs
 * from a destructor of this object, after nbdkit's exit handlers (the
 * modules are unloaded by then, or would be without 2.).  Weak: not in
 * the ThreadSanitizer runtime.
 */
extern int __lsan_do_recoverable_leak_check (void) __attribute__ ((weak));

__attribute__ ((destructor))
static void
leak_check (void)
{
  if (__lsan_do_recoverable_leak_check)
    __lsan_do_recoverable_leak_check ();
}

/* 4. TMPDIR back.  ThreadSanitizer's initialisation writes 512 KiB
 * into a file in $TMPDIR and keeps it mapped; a test that gives nbdkit
 * a small tmpfs as TMPDIR (for backup scratch) would find it full.  So
 * sanitizer-nbdkit points TMPDIR elsewhere for the runtime and passes
 * nbdkit's own in NC_TMPDIR_AFTER_INIT ("=DIR", or "-" for unset),
 * which this constructor restores, after making sure (with a malloc)
 * that the runtime has initialised.
 */
__attribute__ ((constructor))
static void
restore_tmpdir (void)
{
  const char *v = getenv ("NC_TMPDIR_AFTER_INIT");

  free (malloc (1));
  if (v == NULL)
    return;
  if (v[0] == '=')
    setenv ("TMPDIR", v + 1, 1);
  else
    unsetenv ("TMPDIR");
  unsetenv ("NC_TMPDIR_AFTER_INIT");
}
