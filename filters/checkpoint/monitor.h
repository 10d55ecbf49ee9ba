/* The filter's QMP commands. */
#ifndef CHECKPOINT_MONITOR_H
#define CHECKPOINT_MONITOR_H

extern void monitor_register_commands (void);

#endif /* CHECKPOINT_MONITOR_H */
