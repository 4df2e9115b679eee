/* json_schema.h - JSON Schema -> GBNF (engine/grammar.h), for structured output.
 *
 * Covers what structured-output clients send (OpenAI's strict subset, zod-to-json-schema,
 * Ollama's `format`): type (also a list of types), enum, const, object properties in their
 * order with required/optional, additionalProperties (false, true or a schema), arrays with
 * items / prefixItems and minItems/maxItems, nested objects, anyOf/oneOf (as alternatives),
 * allOf of one schema, $ref to #/$defs/... or #/definitions/... (recursive too), string
 * minLength/maxLength and format date, time, date-time, uuid; integer and number; nullable.
 * Refused with a message (so a client never gets output that silently breaks its schema):
 * pattern, allOf of several schemas, $ref outside the document. Accepted but not enforced:
 * minimum/maximum, multipleOf, other formats (email, uri: JSON Schema treats formats as
 * annotations). Whitespace between tokens is bounded so a model cannot pad forever.
 * Thread rule: pure functions.
 */
#ifndef MESH_ENGINE_JSON_SCHEMA_H
#define MESH_ENGINE_JSON_SCHEMA_H

#include <stddef.h>

/* Compiles the schema in json[len] to GBNF text (*out, malloc'd, NUL-terminated; free()).
 * 0, MESH_EINVAL with err naming the problem (not JSON, unsupported keyword, bad $ref,
 * minItems above maxItems...) or MESH_ENOMEM. */
int json_schema_to_gbnf(const char *json, size_t len, char **out, char *err, size_t err_cap);

/* GBNF for any JSON object (OpenAI's response_format json_object, Ollama's format "json").
 * Static text; do not free. */
const char *json_schema_any_object_gbnf(void);

#endif
