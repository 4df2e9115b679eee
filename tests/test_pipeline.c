/* test_pipeline.c - what a user is told about a split model's route (node/pipeline.c
 * pipeline_missing): which layers no announced stage nor this node holds. The planner and
 * the pipeline on real nodes are in test_stage.c; the CLI, API and console over real
 * processes in split_route.test.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/err.h"
#include "node/pipeline.h"

#include <stdio.h>
#include <string.h>

static void cand(struct peers_stage *c, int b, int e)
{
    memset(c, 0, sizeof *c);
    c->layer_begin = b;
    c->layer_end = e;
    snprintf(c->pick.id_text, sizeof c->pick.id_text, "peer%d-%d", b, e);
}

static void test_pipeline_missing_names_the_holes(void **state)
{
    (void)state;
    struct peers_stage c[3];
    struct pipeline_gap g[PIPELINE_MAX_GAPS];
    cand(&c[0], 0, 2);
    cand(&c[1], 4, 5);
    cand(&c[2], 7, 9);
    /* 12 layers: 2-3, 5-6 and 9-11 are nobody's */
    int n = pipeline_missing(c, 3, 12, 0, 0, g, PIPELINE_MAX_GAPS);
    assert_int_equal(n, 3);
    assert_int_equal(g[0].layer_begin, 2);
    assert_int_equal(g[0].layer_end, 4);
    assert_int_equal(g[1].layer_begin, 5);
    assert_int_equal(g[1].layer_end, 7);
    assert_int_equal(g[2].layer_begin, 9);
    assert_int_equal(g[2].layer_end, 12);
    /* this node's own range fills the middle ones */
    n = pipeline_missing(c, 3, 12, 2, 7, g, PIPELINE_MAX_GAPS);
    assert_int_equal(n, 1);
    assert_int_equal(g[0].layer_begin, 9);
    assert_int_equal(g[0].layer_end, 12);
    /* at most cap ranges */
    assert_int_equal(pipeline_missing(c, 3, 12, 0, 0, g, 1), 1);
    assert_int_equal(g[0].layer_begin, 2);
}

static void test_pipeline_missing_none_when_held(void **state)
{
    (void)state;
    struct peers_stage c[3];
    struct pipeline_gap g[PIPELINE_MAX_GAPS];
    /* overlapping ranges hold every layer (the planner finds no chain: 0-5 then 4-11) */
    cand(&c[0], 0, 6);
    cand(&c[1], 4, 12);
    assert_int_equal(pipeline_missing(c, 2, 12, 0, 0, g, PIPELINE_MAX_GAPS), 0);
    struct pipeline_hop h[PIPELINE_MAX_HOPS];
    assert_int_equal(pipeline_plan(c, 2, 12, 0, 0, h, PIPELINE_MAX_HOPS), MESH_ENOTFOUND);
    /* no candidates, no local range: everything; ranges past n_layer are clipped */
    assert_int_equal(pipeline_missing(NULL, 0, 5, 0, 0, g, PIPELINE_MAX_GAPS), 1);
    assert_int_equal(g[0].layer_begin, 0);
    assert_int_equal(g[0].layer_end, 5);
    cand(&c[2], 3, 99);
    assert_int_equal(pipeline_missing(&c[2], 1, 5, 0, 3, g, PIPELINE_MAX_GAPS), 0);
    assert_int_equal(pipeline_missing(c, 2, 0, 0, 0, g, PIPELINE_MAX_GAPS), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_missing_names_the_holes),
        cmocka_unit_test(test_pipeline_missing_none_when_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
