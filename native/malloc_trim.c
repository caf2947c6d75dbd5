/*
 * The sidecar's optional native piece (issue 14; README, "Memory"): `trim()` calls glibc's
 * malloc_trim(0), which hands the free memory of every malloc arena back to the system, holes
 * between live chunks included (whole free pages, through madvise). The sidecar calls it right after
 * its idle collection (src/cli/memoryRelease.ts): after a burst glibc otherwise keeps 10-25 MB that
 * V8's compiler zones and threads freed, and Node offers no way to call it.
 *
 * Built by scripts/nativeTrim.ts at `npm install` / `npm run build` when a C compiler is present,
 * with `cc -shared -fPIC -O2 -nostdlib -Wl,-z,now`: the few Node-API functions it uses and
 * malloc_trim are declared here by prototype, so it needs no node headers, no libc headers and no
 * node-gyp; they resolve against the node binary and the libc it has loaded (-z now: at load time,
 * so a libc without malloc_trim fails the load, which the sidecar logs, rather than the call).
 * Built only on Linux with glibc (scripts/nativeTrim.ts); loaded by src/cli/mallocTrim.ts.
 */

typedef __SIZE_TYPE__ size_t;
typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
/* napi_status is an enum: an int, napi_ok = 0. */
typedef int napi_status;
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);

napi_status napi_create_function(napi_env env, const char *utf8name, size_t length, napi_callback cb, void *data, napi_value *result);
napi_status napi_set_named_property(napi_env env, napi_value object, const char *utf8name, napi_value value);
napi_status napi_get_boolean(napi_env env, _Bool value, napi_value *result);
int malloc_trim(size_t pad);

/* trim(): true when malloc_trim gave memory back. */
static napi_value trim(napi_env env, napi_callback_info info) {
  napi_value released;
  (void)info;
  if (napi_get_boolean(env, malloc_trim(0) != 0, &released) != 0) return 0;
  return released;
}

/* Node-API's entry point, found by name when node loads the file (process.dlopen). */
napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "trim", 4, trim, 0, &fn) != 0) return 0;
  if (napi_set_named_property(env, exports, "trim", fn) != 0) return 0;
  return exports;
}
