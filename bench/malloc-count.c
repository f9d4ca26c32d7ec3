/*
 * Live malloc chunks by size, for finding where a process' native memory per connection goes
 * (docs/performance.md, "Where Deno's per-connection memory goes"). Preload it into the server,
 * ask for a count before and after opening the connections, and compare the two files:
 *
 *   gcc -O2 -shared -fPIC -o /tmp/malloc-count.so bench/malloc-count.c -lpthread
 *   LD_PRELOAD=/tmp/malloc-count.so deno run <the flags of `deno task start`> main.ts &
 *   touch /tmp/malloc-count.dump      # within a second: /tmp/malloc-count.0 is written
 *   ... open the connections ...
 *   touch /tmp/malloc-count.dump      # /tmp/malloc-count.1
 *
 * Run deno directly, not through `deno task`, whose own process would answer the dump too.
 * Each line of a count is "<usable size rounded down to 16 bytes> <live chunks of that size>";
 * chunks of 64 KiB and more share the last line. It wraps glibc's own functions, so it works only
 * where the program uses glibc's malloc (Deno and Node on Linux do).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define BUCKETS 4097
static long live[BUCKETS];

static int bucket(void *p) {
  size_t b = malloc_usable_size(p) / 16;
  return b >= BUCKETS - 1 ? BUCKETS - 1 : (int)b;
}
static void *counted(void *p) {
  if (p) __atomic_add_fetch(&live[bucket(p)], 1, __ATOMIC_RELAXED);
  return p;
}
static void uncount(void *p) {
  if (p) __atomic_sub_fetch(&live[bucket(p)], 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void free(void *p) { uncount(p); __libc_free(p); }
void *calloc(size_t n, size_t size) { return counted(__libc_calloc(n, size)); }
void *realloc(void *old, size_t n) {
  uncount(old);
  void *p = __libc_realloc(old, n);
  if (p) return counted(p);
  if (old && n) counted(old); /* failed: the old chunk is still live */
  return NULL;
}
void *memalign(size_t align, size_t n) { return counted(__libc_memalign(align, n)); }
void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }
int posix_memalign(void **out, size_t align, size_t n) {
  void *p = memalign(align, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}

static void *watch(void *unused) {
  (void)unused;
  for (int k = 0;; sleep(1)) {
    if (unlink("/tmp/malloc-count.dump") != 0) continue;
    char name[64];
    snprintf(name, sizeof name, "/tmp/malloc-count.%d", k++);
    FILE *f = fopen(name, "w");
    if (!f) continue;
    for (int i = 0; i < BUCKETS; i++) {
      if (live[i]) fprintf(f, "%d %ld\n", i * 16, live[i]);
    }
    fclose(f);
  }
  return NULL;
}

__attribute__((constructor)) static void start(void) {
  pthread_t t;
  pthread_create(&t, NULL, watch, NULL);
}
