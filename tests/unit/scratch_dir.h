/* tests/unit/scratch_dir.h — removing a test's scratch folder, shared by the tests that write
 * datasets to disk (test_data.c, test_graph.c). */
#ifndef EM3_TEST_SCRATCH_DIR_H
#define EM3_TEST_SCRATCH_DIR_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Removes `path` and everything below it (symbolic links are removed, not followed). */
static void rm_tree(const char *path) {
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(path);
}

#endif
