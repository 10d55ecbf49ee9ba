/* SPDX-License-Identifier: BSD-3-Clause
 * Copyright (C) nbdkit-checkpoint authors.  See LICENSE.
 */
/* QEMU's push backup and job commands: drive-backup and
 * blockdev-backup (also transaction actions), query-jobs, query-block-jobs, job-* and
 * block-job-* (features/push-backup.h, engines/job.h).
 */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "engines/job.h"
#include "features/push-backup.h"
#include "qmp/actions.h"
#include "qmp/commands.h"

static bool
parse_enum (json_t *args, const char *name, const char *const *names,
            int *value, struct qmp_error *err)
{
  const char *s = qmp_arg_str (args, name, NULL);
  int i;

  if (s == NULL)
    return true;
  for (i = 0; names[i]; i++)
    if (strcmp (names[i], s) == 0) {
      *value = i;
      return true;
    }
  qmp_error (err, "Parameter '%s' does not accept value '%s'", name, s);
  return false;
}

/* QEMU's BlockdevOnError (enum push_on_error, in its order). */
static bool
parse_error_policy (json_t *args, const char *name, enum push_on_error *p,
                    struct qmp_error *err)
{
  static const char *const policies[] = {
    "report", "ignore", "enospc", "stop", "auto", NULL
  };
  int v = PUSH_ON_ERROR_REPORT;

  if (!parse_enum (args, name, policies, &v, err))
    return false;
  *p = v;
  return true;
}

/* The arguments both commands share, into SPEC (strings borrowed
 * from ARGS); then the job.
 */
static json_t *
backup_action (struct txn *t, json_t *args, struct push_backup_spec *spec,
               struct qmp_error *err)
{
  static const char *const syncs[] = {
    "full", "incremental", "bitmap", "none", "top", NULL
  };
  static const char *const bitmap_modes[] = {
    "", "on-success", "never", "always", NULL
  };
  int sync = 0, bmode = 0;
  int64_t speed = qmp_arg_int (args, "speed", 0);

  spec->job_id = qmp_arg_str (args, "job-id", NULL);
  spec->device = qmp_arg_str (args, "device", "");
  spec->bitmap = qmp_arg_str (args, "bitmap", NULL);
  spec->auto_finalize = qmp_arg_bool (args, "auto-finalize", true);
  spec->auto_dismiss = qmp_arg_bool (args, "auto-dismiss", true);
  if (!parse_enum (args, "sync", syncs, &sync, err))
    return NULL;
  if (json_object_get (args, "bitmap-mode") &&
      (!parse_enum (args, "bitmap-mode", bitmap_modes, &bmode, err) ||
       bmode == 0)) {
    if (bmode == 0 && err->class == NULL)
      qmp_error (err, "Parameter 'bitmap-mode' does not accept value ''");
    return NULL;
  }
  if (speed < 0) {
    qmp_error (err, "Invalid parameter 'speed'");
    return NULL;
  }
  if (qmp_arg_bool (args, "compress", false)) {
    qmp_error (err, "Compression is not supported for this drive %s",
               spec->device);
    return NULL;
  }
  if (!parse_error_policy (args, "on-source-error", &spec->on_source_error,
                          err) ||
      !parse_error_policy (args, "on-target-error", &spec->on_target_error,
                          err))
    return NULL;
  spec->sync = sync;
  spec->bitmap_mode = bmode;
  spec->speed = speed;
  if (push_backup_create (t, spec, err) == -1)
    return NULL;
  return json_object ();
}

static json_t *
drive_backup_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  static const char *const modes[] = { "absolute-paths", "existing", NULL };
  struct push_backup_spec spec = {
    .target = qmp_arg_str (args, "target", ""),
    .format = qmp_arg_str (args, "format", NULL),
  };
  int mode = 0;

  if (!parse_enum (args, "mode", modes, &mode, err))
    return NULL;
  spec.existing = mode == 1;
  return backup_action (t, args, &spec, err);
}

static json_t *
blockdev_backup_action (struct txn *t, json_t *args, struct qmp_error *err)
{
  struct push_backup_spec spec = {
    .target_node = qmp_arg_str (args, "target", ""),
  };

  return backup_action (t, args, &spec, err);
}

/* The arguments drive-backup and blockdev-backup share, documented
 * once: the job and its source, then everything after the target.
 */
#define BACKUP_JOB_SOURCE_ARGS \
  { "job-id", QMP_STR, true,                                            \
    "The job's name: a letter, then letters, digits, '-', '.', '_'.  "  \
    "Required in practice (a node has no device name to default to)." }, \
  { "device", QMP_STR, false, "The node to back up." },

#define BACKUP_JOB_COMMON_ARGS \
  { "sync", QMP_STR, false,                                             \
    "\"full\" (the whole disk), \"incremental\" (the chunks dirty in "  \
    "bitmap; bitmap-mode on-success), \"bitmap\" (likewise, with an "   \
    "explicit bitmap-mode), \"none\" (no copy: before a guest write "   \
    "changes a 64 KiB cluster the first time, its old data goes to the " \
    "target; runs until cancelled); \"top\" is refused (no backing "    \
    "chains)." },                                                       \
  { "speed", QMP_INT, true,                                             \
    "A limit in bytes per second (0: none); the first chunk is not "    \
    "limited." },                                                       \
  { "bitmap", QMP_STR, true, "A bitmap of the node (QEMU's rules)." },  \
  { "bitmap-mode", QMP_STR, true,                                       \
    "\"on-success\", \"always\" or \"never\": what becomes of bitmap "  \
    "when the job ends, as QEMU's table says." },                       \
  { "compress", QMP_BOOL, true, "false only." },                        \
  { "on-source-error", QMP_STR, true,                                   \
    "What a failed read of the frozen view does: \"report\" (the "      \
    "default: the job fails), \"ignore\" (BLOCK_JOB_ERROR, and the "    \
    "chunk is copied again, as QEMU 7.2 does), \"stop\" (the job "      \
    "pauses with io-status failed, or nospace for ENOSPC; job-resume "  \
    "copies the chunk again), \"enospc\" and \"auto\" (stop on "        \
    "ENOSPC, report otherwise)." },                                     \
  { "on-target-error", QMP_STR, true,                                   \
    "The same for a failed write of the target." },                     \
  { "auto-finalize", QMP_BOOL, true,                                    \
    "true (the default): the job finishes by itself; false: it stops "  \
    "in pending (BLOCK_JOB_PENDING) until job-finalize, which applies " \
    "the bitmap's result and ends it (job-cancel there cancels it)." }, \
  { "auto-dismiss", QMP_BOOL, true,                                     \
    "true (the default): the job goes away once concluded; false: it "  \
    "stays concluded until job-dismiss." },                             \
  { "filter-node-name", QMP_STR, true, "Accepted and ignored." },

static const struct qmp_arg drive_backup_args[] = {
  BACKUP_JOB_SOURCE_ARGS
  { "target", QMP_STR, false,
    "A file path (created sparse, or with mode \"existing\" opened as "
    "it is), or an nbd:// or nbd+unix:// URI written through libnbd." },
  { "format", QMP_STR, true,
    "\"raw\" only; for another format, push to qemu-nbd instead." },
  { "mode", QMP_STR, true,
    "\"absolute-paths\" (the default: create the file) or "
    "\"existing\"." },
  BACKUP_JOB_COMMON_ARGS
  { NULL }
};

static const struct qmp_arg blockdev_backup_args[] = {
  BACKUP_JOB_SOURCE_ARGS
  { "target", QMP_STR, false,
    "A node of this process (e.g. added with blockdev-add), of the "
    "same size, in no other job; written as a guest write of it is "
    "(its bitmaps record the job's writes)." },
  BACKUP_JOB_COMMON_ARGS
  { NULL }
};

static const struct txn_action actions[] = {
  { "drive-backup", drive_backup_args, drive_backup_action },
  { "blockdev-backup", blockdev_backup_args, blockdev_backup_action },
  { NULL }
};

static json_t *
drive_backup_command (json_t *args, struct qmp_error *err)
{
  return action_run_one (&actions[0], args, err);
}

static json_t *
blockdev_backup_command (json_t *args, struct qmp_error *err)
{
  return action_run_one (&actions[1], args, err);
}

/* The job named by ARG: QEMU's "Job not found" or, for the block-job-*
 * commands, "Block job 'X' not found".
 */
static struct job *
find_job (json_t *args, const char *arg, bool block, struct qmp_error *err)
{
  const char *id = qmp_arg_str (args, arg, "");
  struct job *j = jobs_find (id);

  if (block && j && !job_is_push_backup (j))
    j = NULL;
  if (j == NULL) {
    if (block)
      qmp_error_set (err, QMP_ERROR_DEVICE_NOT_ACTIVE,
                     "Block job '%s' not found", id);
    else
      qmp_error_set (err, QMP_ERROR_DEVICE_NOT_ACTIVE, "Job not found");
  }
  return j;
}

static json_t *
ok_or_null (int r)
{
  return r == 0 ? json_object () : NULL;
}

static json_t *
query_jobs (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct job *j;

  for (j = jobs_first (); j; j = j->next)
    json_array_append_new (list, job_describe (j));
  return list;
}

static json_t *
query_block_jobs (json_t *args, struct qmp_error *err)
{
  json_t *list = json_array ();
  struct job *j;

  for (j = jobs_first (); j; j = j->next)
    if (job_is_push_backup (j))
      json_array_append_new (list, push_backup_describe (j));
  return list;
}

#define JOB_VERB_COMMAND(fn, arg, block, call)                          \
  static json_t *                                                       \
  fn (json_t *args, struct qmp_error *err)                              \
  {                                                                     \
    struct job *j = find_job (args, arg, block, err);                   \
    return j ? ok_or_null (call) : NULL;                                \
  }

JOB_VERB_COMMAND (job_cancel, "id", false, job_user_cancel (j, err))
JOB_VERB_COMMAND (job_pause, "id", false, job_user_pause (j, err))
JOB_VERB_COMMAND (job_resume, "id", false, job_user_resume (j, err))
JOB_VERB_COMMAND (job_complete, "id", false,
                  job_apply_verb (j, JOB_VERB_COMPLETE, err))
JOB_VERB_COMMAND (job_finalize_cmd, "id", false, job_finalize (j, err))
JOB_VERB_COMMAND (job_dismiss_cmd, "id", false, job_dismiss (j, err))
JOB_VERB_COMMAND (block_job_cancel, "device", true, job_user_cancel (j, err))
JOB_VERB_COMMAND (block_job_pause, "device", true, job_user_pause (j, err))
JOB_VERB_COMMAND (block_job_resume, "device", true, job_user_resume (j, err))
JOB_VERB_COMMAND (block_job_complete, "device", true,
                  job_apply_verb (j, JOB_VERB_COMPLETE, err))
JOB_VERB_COMMAND (block_job_finalize, "id", true, job_finalize (j, err))
JOB_VERB_COMMAND (block_job_dismiss, "id", true, job_dismiss (j, err))
JOB_VERB_COMMAND (block_job_set_speed, "device", true,
                  push_backup_set_speed (j, qmp_arg_int (args, "speed", 0),
                                         err))

static const struct qmp_arg id_args[] = {
  { "id", QMP_STR, false, "The job's id." },
  { NULL }
};

static const struct qmp_arg device_args[] = {
  { "device", QMP_STR, false, "The block job's id." },
  { NULL }
};

static const struct qmp_arg cancel_args[] = {
  { "device", QMP_STR, false, "The block job's id." },
  { "force", QMP_BOOL, true, "Accepted (it matters only for mirrors)." },
  { NULL }
};

static const struct qmp_arg speed_args[] = {
  { "device", QMP_STR, false, "The block job's id." },
  { "speed", QMP_INT, false, "Bytes per second, 0 for no limit." },
  { NULL }
};

#define VERB_ERRORS(notfound)                                           \
  notfound " (class DeviceNotActive); \"Job 'X' in state 'S' cannot "    \
  "accept command verb 'V'\"; \"Job is already paused\"; \"Can't resume " \
  "a job that was not paused\"."
#define JOB_VERB(name, fn, args, what)                                  \
  { name, args, fn, what, "{}.", VERB_ERRORS ("\"Job not found\"") }
#define BLOCK_VERB(name, fn, args, what)                                \
  { name, args, fn, what, "{}.",                                        \
    VERB_ERRORS ("\"Block job 'X' not found\"") }

static const struct qmp_command commands[] = {
  { "drive-backup", drive_backup_args, drive_backup_command,
    "Copy DEVICE as it is now to TARGET in a job (QEMU's drive-backup): "
    "the disk is frozen by copy-before-write at this instant, the copy "
    "skips holes and zeros of the frozen view, and guest writes go on.  "
    "Also a transaction action (completion-mode grouped: the jobs end "
    "together).  Events: JOB_STATUS_CHANGE, BLOCK_JOB_PENDING, "
    "BLOCK_JOB_COMPLETED, "
    "BLOCK_JOB_CANCELLED, BLOCK_JOB_ERROR.",
    "{}.",
    "QEMU's validation texts (e.g. \"must provide a valid bitmap name "
    "for 'incremental' sync mode\", \"Bitmap sync mode must be given "
    "when providing a bitmap\", \"Bitmap 'X' could not be found\"); "
    "\"Invalid job ID 'X'\"; \"Job ID 'X' already in use\"; \"Could "
    "not create 'PATH': ...\"; \"Could not open 'TARGET': ...\"; a "
    "format other than raw; what is not supported yet says so." },
  { "blockdev-backup", blockdev_backup_args, blockdev_backup_command,
    "drive-backup to TARGET, a node of this process (QEMU's "
    "blockdev-backup): the same job, arguments and events.  Also a "
    "transaction action.",
    "{}.",
    "drive-backup's (but for the target's), and \"Cannot find "
    "device='T' nor node-name='T'\"; \"Source and target cannot be the "
    "same\"; \"Node 'T' is busy: block device is in use by block job: "
    "backup\" (T is in another job); \"Source and target image have "
    "different sizes\"; \"Could not open node 'T'\"; \"Node 'T' is "
    "read-only\"." },
  { "query-jobs", NULL, query_jobs,
    "Every job, oldest first.",
    "[{\"id\", \"type\" (\"backup\"), \"status\", \"current-progress\", "
    "\"total-progress\" (the bytes the job will copy), \"error\"? "
    "(\"Operation canceled\", \"Input/output error\", ...)}].",
    NULL },
  { "query-block-jobs", NULL, query_block_jobs,
    "The backup jobs, as block jobs.",
    "[{\"type\", \"device\" (the job id), \"len\", \"offset\", \"busy\", "
    "\"paused\", \"speed\", \"io-status\" (\"ok\", \"failed\", "
    "\"nospace\"), \"ready\", \"status\", \"auto-finalize\", "
    "\"auto-dismiss\", \"error\"?}].",
    NULL },
  JOB_VERB ("job-cancel", job_cancel, id_args,
            "Cancel a job: it ends aborting, then concluded."),
  JOB_VERB ("job-pause", job_pause, id_args,
            "Pause a job at its next pause point."),
  JOB_VERB ("job-resume", job_resume, id_args, "Resume a paused job."),
  JOB_VERB ("job-complete", job_complete, id_args,
            "Complete a job in state ready (a backup never is)."),
  JOB_VERB ("job-finalize", job_finalize_cmd, id_args,
            "Finalize a job waiting in state pending."),
  JOB_VERB ("job-dismiss", job_dismiss_cmd, id_args,
            "Dismiss a concluded job (auto-dismiss false)."),
  BLOCK_VERB ("block-job-cancel", block_job_cancel, cancel_args,
              "job-cancel for a block job."),
  BLOCK_VERB ("block-job-pause", block_job_pause, device_args,
              "job-pause for a block job."),
  BLOCK_VERB ("block-job-resume", block_job_resume, device_args,
              "job-resume for a block job."),
  BLOCK_VERB ("block-job-complete", block_job_complete, device_args,
              "job-complete for a block job."),
  BLOCK_VERB ("block-job-finalize", block_job_finalize, id_args,
              "job-finalize for a block job."),
  BLOCK_VERB ("block-job-dismiss", block_job_dismiss, id_args,
              "job-dismiss for a block job."),
  { "block-job-set-speed", speed_args, block_job_set_speed,
    "Change a block job's speed limit.",
    "{}.",
    VERB_ERRORS ("\"Block job 'X' not found\"") " \"Invalid parameter "
    "'speed'\" for a negative speed." },
  { NULL }
};

static const struct qmp_command_set command_set = { "checkpoint", commands };

void
job_commands_register (void)
{
  actions_register (actions);
  qmp_register_commands (&command_set);
}
