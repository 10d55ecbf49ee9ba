/* Names for macro-local variables that cannot clash, even when a macro
 * is used twice on one line or nested in another: __COUNTER__ gives
 * each expansion its own number.
 */
#ifndef NC_UNIQUE_NAME_H
#define NC_UNIQUE_NAME_H

#define NC_CONCAT_(a, b) a##b
#define NC_CONCAT(a, b) NC_CONCAT_ (a, b)
#define NC_UNIQUE(name) NC_CONCAT (name, __COUNTER__)

#endif /* NC_UNIQUE_NAME_H */
