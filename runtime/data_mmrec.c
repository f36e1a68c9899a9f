/* runtime/data_mmrec.c — MMRec's atomic format as a dataset description: NAME.inter (tab
 * separated `userID itemID x_label`, x_label 0/1/2 = train/valid/test) read by the CSV reader,
 * and every *_feat.npy as an item table. MMRec's 0-based ids become 1-based: 0 is the padding. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data_internal.h"
#include "ir/support.h"

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in `dir` ending with `suffix`, sorted (readdir's order is the file system's). */
static char **list_dir(const char *dir, const char *suffix, int *n) {
    *n = 0;
    char **names = NULL;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        if (em3_data_has_suffix(e->d_name, suffix)) {
            names = em3_xrealloc(names, sizeof *names * (size_t)(*n + 1));
            names[(*n)++] = em3_xstrdup(e->d_name);
        }
    if (d) closedir(d);
    if (*n) qsort(names, (size_t)*n, sizeof *names, by_name);
    return names;
}

static void free_list(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

bool em3_data_is_mmrec(const char *dir) {
    int n;
    char **inter = list_dir(dir, ".inter", &n);
    free_list(inter, n);
    return n == 1;
}

static char *join(const char *dir, const char *name) {
    char *p = em3_xmalloc(strlen(dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", dir, name);
    return p;
}

/* `name` without its last `cut` characters. */
static char *stem(const char *name, size_t cut) {
    char *s = em3_xstrdup(name);
    s[strlen(s) - cut] = 0;
    return s;
}

static void add_id(em3_data_spec *s, const char *name, const char *source) {
    s->feat = em3_xrealloc(s->feat, sizeof *s->feat * (size_t)(s->n_feat + 1));
    s->feat[s->n_feat++] = (em3_feature_spec){
        .name = em3_xstrdup(name), .source = em3_xstrdup(source), .kind = EM3_COL_CATEGORICAL,
        .enc = EM3_ENC_IDENTITY, .id_offset = 1, .min_count = 1, .share = -1, .splitter = '^'};
}

em3_data_spec *em3_data_spec_mmrec(const char *dir, char *err, size_t errlen) {
    int n_inter, n_feat;
    char **inter = list_dir(dir, ".inter", &n_inter);
    if (n_inter != 1) {
        em3_data_fail(err, errlen, "%s: an MMRec folder holds exactly one NAME.inter file (found %d)",
                      dir, n_inter);
        free_list(inter, n_inter);
        return NULL;
    }
    char **feats = list_dir(dir, "_feat.npy", &n_feat);
    em3_data_spec *s = em3_xcalloc(1, sizeof *s);
    s->origin = em3_xstrdup(dir);
    s->name = stem(inter[0], strlen(".inter"));
    s->data_file = join(dir, inter[0]);
    s->split_col = em3_xstrdup("x_label");
    for (int i = 0; i < EM3_SPLIT_COUNT; i++) {
        char v[2] = {(char)('0' + i), 0};
        s->split_value[i] = em3_xstrdup(v);
    }
    s->separator = '\t';
    s->format = EM3_FMT_CSV;
    add_id(s, "user", "userID");
    add_id(s, "item", "itemID");
    s->group_name = em3_xstrdup("user");
    s->item_name = em3_xstrdup("item");
    /* The description's text, for the fingerprint: what this function decided. */
    em3_strbuf text = {0};
    em3_sb_printf(&text, "mmrec %s\n", inter[0]);
    s->table = em3_xcalloc((size_t)n_feat + 1, sizeof *s->table);
    for (int i = 0; i < n_feat; i++) {
        em3_table_spec *t = &s->table[s->n_table++];
        t->name = stem(feats[i], strlen("_feat.npy"));
        t->file = join(dir, feats[i]);
        t->kind = EM3_COL_EMBEDDING;
        em3_sb_printf(&text, "table %s\n", feats[i]);
    }
    s->text = text.data;
    s->text_len = text.len;
    free_list(inter, n_inter);
    free_list(feats, n_feat);
    if (!em3_data_spec_check(s, err, errlen)) {
        em3_data_spec_free(s);
        return NULL;
    }
    return s;
}
