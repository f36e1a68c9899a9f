# lit configuration for EM3's golden tests: IR dumps, pass outputs and diagnostics, each checked
# by FileCheck. Substitutions: em3, em3-opt, FileCheck, %models (the models/ folder).
import os
import lit.formats

config.name = "em3"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".em3", ".ir", ".test"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py.in"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.em3_obj_root, "tests", "lit")
config.substitutions.append(("%models", os.path.join(config.em3_src_root, "models")))
config.substitutions.append(("%srcroot", config.em3_src_root))

# Tool names are replaced only where they stand as a command word (lit applies these as regexes),
# so that "models/em3_din.em3" or "--not-this" are left alone.
def tool(name, path):
    config.substitutions.append((r"(?<![-\w./%])" + name + r"(?=\s|$)", path))

tool("FileCheck", config.filecheck)
tool("em3-opt", os.path.join(config.em3_tools_dir, "em3-opt"))
tool("em3", os.path.join(config.em3_tools_dir, "em3"))
tool("not", os.path.join(os.path.dirname(config.filecheck), "not"))
config.environment["EM3_PATH"] = os.path.join(config.em3_src_root, "models", "lib")
for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS"):
    if var in os.environ:
        config.environment[var] = os.environ[var]
