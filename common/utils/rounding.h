/* Alignment arithmetic on byte offsets. ALIGN must be a power of two. */
#ifndef NC_ROUNDING_H
#define NC_ROUNDING_H

#define IS_ALIGNED(x, align) (((x) & ((align) - 1)) == 0)
#define ROUND_DOWN(x, align) ((x) & ~((__typeof__ (x)) (align) - 1))
#define ROUND_UP(x, align) ROUND_DOWN ((x) + (align) - 1, (align))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#endif /* NC_ROUNDING_H */
