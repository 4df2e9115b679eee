/* modelserve.h - the model store as the serve API sees it (api/ollama_store.c): load a
 * store model on its first request, and describe one for /api/show. No engine types. */
#ifndef MESH_NODE_MODELSERVE_H
#define MESH_NODE_MODELSERVE_H

#include "node/router.h"

/* When name is neither loaded here nor announced by the mesh but is in the store, adds it
 * to the router's registry and starts loading it (registry_add_load): the request that
 * follows waits for it on the API side (api/http.c await_load, HTTP_LOAD_WAIT_MS). Any
 * thread. */
void modelserve_autoload(struct router *rt, const char *name);
/* Ollama's /api/show object for a store or loaded model (malloc'd JSON), or NULL with
 * *status 404 (unknown) or 500. verbose: model_info's arrays (vocabulary...) in full, not null. */
char *modelserve_show_json(struct router *rt, const char *name, bool verbose, int *status);

#endif
