/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* Unit tests of the QMP framing, request checking and dispatch: bytes
 * in through a session, replies out, checked as JSON.
 */
#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qmp.h"
#include "session.h"
#include "internal.h"

/* The nbdkit server functions the library calls; here there is no
 * nbdkit process, so they only record what happened.
 */
static int shutdown_called;

void
nbdkit_debug (const char *fmt, ...)
{
}

void
nbdkit_error (const char *fmt, ...)
{
}

char *
nbdkit_absolute_path (const char *path)
{
  return strdup (path);
}

void
nbdkit_shutdown (void)
{
  shutdown_called++;
}

static int passed, failed;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf (stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond); \
      failed++;                                                       \
      return;                                                         \
    }                                                                 \
  } while (0)

/* Replies captured from the session. */
static json_t *replies;

static void
capture (void *opaque, const char *msg)
{
  json_error_t jerr;
  json_t *v = json_loads (msg, 0, &jerr);

  if (v == NULL) {
    fprintf (stderr, "reply is not JSON: %s\n", msg);
    exit (EXIT_FAILURE);
  }
  json_array_append_new (replies, v);
}

static struct qmp_session session;

static void
fresh_session (bool negotiate)
{
  json_decref (replies);
  replies = json_array ();
  qmp_session_free (&session);
  qmp_session_init (&session, capture, NULL);
  qmp_session_greet (&session);
  if (negotiate) {
    const char *cap = "{\"execute\":\"qmp_capabilities\"}";
    qmp_session_input (&session, cap, strlen (cap));
  }
  json_array_clear (replies);
}

static void
feed (const char *text)
{
  json_array_clear (replies);
  qmp_session_input (&session, text, strlen (text));
}

static const char *
error_class (size_t i)
{
  return json_string_value (json_object_get (json_object_get (
    json_array_get (replies, i), "error"), "class"));
}

static const char *
error_desc (size_t i)
{
  return json_string_value (json_object_get (json_object_get (
    json_array_get (replies, i), "error"), "desc"));
}

static json_t *
ret_of (size_t i)
{
  return json_object_get (json_array_get (replies, i), "return");
}

/* A command with one argument of every type, echoing what it got. */
static json_t *
echo (json_t *args, struct qmp_error *err)
{
  if (json_is_true (json_object_get (args, "fail"))) {
    qmp_error (err, "asked to fail");
    return NULL;
  }
  return json_deep_copy (args);
}

static const struct qmp_arg echo_args[] = {
  { "s", QMP_STR, false, "a test argument" },
  { "b", QMP_BOOL, true, "a test argument" },
  { "i", QMP_INT, true, "a test argument" },
  { "u32", QMP_UINT32, true, "a test argument" },
  { "u64", QMP_UINT64, true, "a test argument" },
  { "a", QMP_ARRAY, true, "a test argument" },
  { "o", QMP_OBJECT, true, "a test argument" },
  { "fail", QMP_BOOL, true, "a test argument" },
  { NULL }
};

static const struct qmp_command test_commands[] = {
  { "echo", echo_args, echo, "Echo the arguments.", "The arguments.", NULL },
  { NULL }
};

static const struct qmp_command_set test_set = { "test", test_commands };

static void
test_greeting (void)
{
  json_t *g, *ver;

  json_decref (replies);
  replies = json_array ();
  qmp_session_init (&session, capture, NULL);
  qmp_session_greet (&session);
  g = json_object_get (json_array_get (replies, 0), "QMP");
  ver = json_object_get (json_object_get (g, "version"), "qemu");
  CHECK (json_integer_value (json_object_get (ver, "major")) == 7);
  CHECK (json_integer_value (json_object_get (ver, "minor")) == 2);
  CHECK (json_array_size (json_object_get (g, "capabilities")) == 0);
  CHECK (strncmp (json_string_value (json_object_get (json_object_get (g, "version"), "package")),
                  "nbdkit-checkpoint ", 18) == 0);
  passed++;
}

static void
test_before_capabilities (void)
{
  fresh_session (false);
  feed ("{\"execute\":\"query-version\",\"id\":1}");
  CHECK (strcmp (error_class (0), "CommandNotFound") == 0);
  CHECK (strstr (error_desc (0), "qmp_capabilities") != NULL);
  CHECK (json_integer_value (json_object_get (json_array_get (replies, 0), "id")) == 1);
  feed ("{\"execute\":\"qmp_capabilities\"}");
  CHECK (json_is_object (ret_of (0)));
  feed ("{\"execute\":\"qmp_capabilities\"}");
  CHECK (strcmp (error_class (0), "CommandNotFound") == 0);
  CHECK (strstr (error_desc (0), "already complete") != NULL);
  feed ("{\"execute\":\"query-version\"}");
  CHECK (json_integer_value (json_object_get (json_object_get (ret_of (0), "qemu"), "major")) == 7);
  passed++;
}

static void
test_capability_enable (void)
{
  fresh_session (false);
  feed ("{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}");
  CHECK (strcmp (error_class (0), "GenericError") == 0);
  CHECK (strstr (error_desc (0), "oob") != NULL);
  feed ("{\"execute\":\"query-commands\"}");
  CHECK (strcmp (error_class (0), "CommandNotFound") == 0);
  passed++;
}

static void
test_stream_framing (void)
{
  fresh_session (true);
  /* Two values on one line, one split across feeds, no newlines. */
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"a}\"},\"id\":1}"
        "{\"execute\":\"echo\",\"arguments\":{\"s\":\"b\\\"{\"},\"id\":2}");
  CHECK (json_array_size (replies) == 2);
  CHECK (strcmp (json_string_value (json_object_get (ret_of (0), "s")), "a}") == 0);
  CHECK (strcmp (json_string_value (json_object_get (ret_of (1), "s")), "b\"{") == 0);
  feed ("{\"execute\":\"ec");
  CHECK (json_array_size (replies) == 0);
  qmp_session_input (&session, "ho\",\"arguments\":{\"s\":\"c\"}}", 26);
  CHECK (json_array_size (replies) == 1);
  CHECK (strcmp (json_string_value (json_object_get (ret_of (0), "s")), "c") == 0);
  passed++;
}

static void
test_bad_json (void)
{
  fresh_session (true);
  feed ("{\"execute\": }");
  CHECK (json_array_size (replies) == 1);
  CHECK (strcmp (error_class (0), "GenericError") == 0);
  CHECK (strstr (error_desc (0), "JSON parse error") != NULL);
  /* The stream goes on after the bad value. */
  feed ("} {\"execute\":\"query-version\"}");
  CHECK (json_array_size (replies) == 2);
  CHECK (strstr (error_desc (0), "JSON parse error") != NULL);
  CHECK (json_is_object (ret_of (1)));
  /* Invalid UTF-8 inside a string. */
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"\xff\xfe\"}}");
  CHECK (strstr (error_desc (0), "JSON parse error") != NULL);
  /* Not an object. */
  feed ("[1] 42 \"str\" ");
  CHECK (json_array_size (replies) == 3);
  CHECK (strcmp (error_desc (0), "QMP input must be a JSON object") == 0);
  CHECK (strcmp (error_desc (1), "QMP input must be a JSON object") == 0);
  CHECK (strcmp (error_desc (2), "QMP input must be a JSON object") == 0);
  passed++;
}

static void
test_truncated (void)
{
  fresh_session (true);
  feed ("{\"execute\":\"query-version\",\"arguments\":{");
  CHECK (json_array_size (replies) == 0);     /* waits for the rest */
  feed ("}}");
  CHECK (json_array_size (replies) == 1);
  CHECK (json_is_object (ret_of (0)));
  passed++;
}

static void
test_oversized (void)
{
  size_t n = QMP_MAX_MESSAGE + 100, i;
  char *big = malloc (n + 64);

  fresh_session (true);
  strcpy (big, "{\"execute\":\"echo\",\"arguments\":{\"s\":\"");
  i = strlen (big);
  memset (big + i, 'x', n - i);
  strcpy (big + n, "\"}}{\"execute\":\"query-version\"}");
  feed (big);
  free (big);
  CHECK (json_array_size (replies) == 2);
  CHECK (strcmp (error_class (0), "GenericError") == 0);
  CHECK (strstr (error_desc (0), "1 MiB") != NULL);
  CHECK (json_is_object (ret_of (1)));
  passed++;
}

static void
test_deep_nesting (void)
{
  char buf[4096];
  size_t i, p = 0;

  fresh_session (true);
  p += sprintf (buf + p, "{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"a\":");
  for (i = 0; i < 100; i++)
    buf[p++] = '[';
  for (i = 0; i < 100; i++)
    buf[p++] = ']';
  strcpy (buf + p, "}}{\"execute\":\"query-version\"}");
  feed (buf);
  CHECK (json_array_size (replies) == 2);
  CHECK (strstr (error_desc (0), "nesting") != NULL);
  CHECK (json_is_object (ret_of (1)));
  /* 64 levels in all is still fine. */
  p = sprintf (buf, "{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"a\":");
  for (i = 0; i < 62; i++)
    buf[p++] = '[';
  for (i = 0; i < 62; i++)
    buf[p++] = ']';
  strcpy (buf + p, "}}");
  feed (buf);
  CHECK (json_array_size (replies) == 1);
  CHECK (json_is_array (json_object_get (ret_of (0), "a")));
  passed++;
}

/* Limits are reported when crossed, before the value ends. */
static void
test_prompt_errors (void)
{
  char *big, brackets[10002];

  fresh_session (true);
  memset (brackets, '[', 64);
  brackets[64] = '\0';
  feed (brackets);
  CHECK (json_array_size (replies) == 0);
  feed ("[");
  CHECK (json_array_size (replies) == 1);
  CHECK (strcmp (error_desc (0), "JSON parse error, nesting deeper than 64 levels") == 0);
  memset (brackets, '[', 10000);
  strcpy (brackets + 10000, "\n");
  feed (brackets);
  CHECK (json_array_size (replies) == 0);
  feed ("\x01{\"execute\":\"query-version\"}");
  CHECK (json_array_size (replies) == 1);
  CHECK (json_is_object (ret_of (0)));

  big = malloc (QMP_MAX_MESSAGE + 1);
  CHECK (big != NULL);
  big[0] = '"';
  memset (big + 1, 'x', QMP_MAX_MESSAGE - 1);
  big[QMP_MAX_MESSAGE] = '\0';
  feed (big);
  CHECK (json_array_size (replies) == 0);       /* exactly 1 MiB so far */
  feed ("x");
  free (big);
  CHECK (json_array_size (replies) == 1);
  CHECK (strstr (error_desc (0), "1 MiB") != NULL);
  feed ("xxx\"{\"execute\":\"query-version\"}");
  CHECK (json_array_size (replies) == 1);
  CHECK (json_is_object (ret_of (0)));
  passed++;
}

static void
test_unknown_command (void)
{
  fresh_session (true);
  feed ("{\"execute\":\"no-such-command\",\"id\":\"x\"}");
  CHECK (strcmp (error_class (0), "CommandNotFound") == 0);
  CHECK (strcmp (error_desc (0), "The command no-such-command has not been found") == 0);
  CHECK (strcmp (json_string_value (json_object_get (json_array_get (replies, 0), "id")), "x") == 0);
  feed ("{\"execute\":\"Query-Version\"}");
  CHECK (strcmp (error_class (0), "CommandNotFound") == 0);
  passed++;
}

static void
test_request_members (void)
{
  fresh_session (true);
  feed ("{\"execute\":1,\"id\":5}");
  CHECK (strcmp (error_desc (0), "QMP input member 'execute' must be a string") == 0);
  CHECK (json_integer_value (json_object_get (json_array_get (replies, 0), "id")) == 5);
  feed ("{\"execute\":\"echo\",\"arguments\":null}");
  CHECK (strcmp (error_desc (0), "QMP input member 'arguments' must be an object") == 0);
  feed ("{\"execute\":\"echo\",\"foo\":1}");
  CHECK (strcmp (error_desc (0), "QMP input member 'foo' is unexpected") == 0);
  feed ("{\"id\":1}");
  CHECK (strcmp (error_desc (0), "QMP input lacks member 'execute'") == 0);
  feed ("{\"exec-oob\":\"query-version\"}");
  CHECK (strstr (error_desc (0), "does not support OOB") != NULL);
  passed++;
}

static void
test_arguments (void)
{
  fresh_session (true);
  feed ("{\"execute\":\"echo\"}");
  CHECK (strcmp (error_desc (0), "Parameter 's' is missing") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":1}}");
  CHECK (strcmp (error_desc (0), "Invalid parameter type for 's', expected: string") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"b\":\"yes\"}}");
  CHECK (strcmp (error_desc (0), "Invalid parameter type for 'b', expected: boolean") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"zz\":1}}");
  CHECK (strcmp (error_desc (0), "Parameter 'zz' is unexpected") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"u32\":4294967296}}");
  CHECK (strcmp (error_desc (0), "Parameter 'u32' expects uint32_t") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"u64\":-1}}");
  CHECK (strstr (error_desc (0), "non-negative") != NULL);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"a\":{}}}");
  CHECK (strcmp (error_desc (0), "Invalid parameter type for 'a', expected: array") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"i\":1.5}}");
  CHECK (strcmp (error_desc (0), "Invalid parameter type for 'i', expected: integer") == 0);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"u32\":4294967295,\"i\":-7,\"o\":{\"k\":[1]}}}");
  CHECK (json_integer_value (json_object_get (ret_of (0), "u32")) == 4294967295LL);
  CHECK (json_integer_value (json_object_get (ret_of (0), "i")) == -7);
  feed ("{\"execute\":\"echo\",\"arguments\":{\"s\":\"x\",\"fail\":true},\"id\":[1,{\"a\":2}]}");
  CHECK (strcmp (error_desc (0), "asked to fail") == 0);
  CHECK (json_is_array (json_object_get (json_array_get (replies, 0), "id")));
  passed++;
}

static void
test_duplicate_keys (void)
{
  fresh_session (true);
  feed ("{\"execute\":\"echo\",\"execute\":\"quit\"}");
  CHECK (strstr (error_desc (0), "JSON parse error") != NULL);
  CHECK (shutdown_called == 0);
  passed++;
}

static void
test_query_commands_and_quit (void)
{
  json_t *list, *e;
  size_t i;
  bool have_echo = false, have_quit = false;

  fresh_session (true);
  feed ("{\"execute\":\"query-commands\"}");
  list = ret_of (0);
  json_array_foreach (list, i, e) {
    const char *n = json_string_value (json_object_get (e, "name"));
    have_echo |= strcmp (n, "echo") == 0;
    have_quit |= strcmp (n, "quit") == 0;
  }
  CHECK (have_echo && have_quit);
  feed ("{\"execute\":\"quit\"}");
  CHECK (json_is_object (ret_of (0)));
  CHECK (shutdown_called == 1);
  passed++;
}

static void
test_event_format (void)
{
  json_t *ev = qmp_event_new ("JOB_STATUS_CHANGE",
                              json_pack ("{s:s,s:s}", "id", "j", "status", "running"));
  json_t *ts = json_object_get (ev, "timestamp");

  CHECK (strcmp (json_string_value (json_object_get (ev, "event")), "JOB_STATUS_CHANGE") == 0);
  CHECK (json_integer_value (json_object_get (ts, "seconds")) > 1600000000);
  CHECK (json_integer_value (json_object_get (ts, "microseconds")) < 1000000);
  CHECK (strcmp (json_string_value (json_object_get (json_object_get (ev, "data"), "status")), "running") == 0);
  json_decref (ev);
  ev = qmp_event_new ("X", NULL);
  CHECK (json_object_get (ev, "data") == NULL);
  json_decref (ev);
  passed++;
}

int
main (void)
{
  qmp_register_builtins ();
  qmp_register_commands (&test_set);

  test_greeting ();
  test_before_capabilities ();
  test_capability_enable ();
  test_stream_framing ();
  test_bad_json ();
  test_truncated ();
  test_oversized ();
  test_deep_nesting ();
  test_prompt_errors ();
  test_unknown_command ();
  test_request_members ();
  test_arguments ();
  test_duplicate_keys ();
  test_query_commands_and_quit ();
  test_event_format ();

  qmp_session_free (&session);
  json_decref (replies);
  printf ("%d passed, %d failed\n", passed, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
