"""The support table: every SGLang release this package is tested with, and its patch family.

Pure data with no imports, so that ``noxfile.py`` can load this file by path (without importing
the package, whose import needs SGLang) and build one ``test-sglang-<version>`` session per entry.
A version is listed here only once its nox session passes the whole suite.
"""

# exact release string (as ``packaging.version.Version`` prints it) -> patch family folder
SUPPORTED_VERSIONS: dict[str, str] = {
    "0.4.6": "v046post4",
    "0.4.6.post1": "v046post4",
    "0.4.6.post2": "v046post4",
    "0.4.6.post3": "v046post4",
    "0.4.6.post4": "v046post4",
    "0.4.6.post5": "v046post4",
    "0.4.7": "v046post4",
    "0.4.7.post1": "v046post4",
    "0.4.8": "v046post4",
    "0.4.8.post1": "v046post4",
    "0.4.9": "v046post4",
    "0.4.9.post1": "v046post4",
    "0.4.9.post2": "v046post4",
    "0.4.9.post4": "v049post4",
    "0.4.9.post5": "v049post4",
    "0.4.9.post6": "v049post4",
    "0.4.10.post1": "v0410post1",
    "0.4.10.post2": "v0410",
    "0.5.1": "v052",
    "0.5.1.post1": "v052",
    "0.5.1.post2": "v052",
    "0.5.1.post3": "v052",
    "0.5.2": "v052",
    "0.5.3": "v052",
    "0.5.3.post1": "v052",
    "0.5.3.post2": "v053post2",
    "0.5.3.post3": "v053post2",
    "0.5.4": "v053post2",
    "0.5.4.post1": "v054",
    "0.5.4.post2": "v054",
    "0.5.4.post3": "v054",
    "0.5.5": "v054",
    "0.5.5.post1": "v054",
    "0.5.5.post2": "v054",
    "0.5.5.post3": "v054",
    "0.5.6": "v054",
    "0.5.6.post1": "v054",
    "0.5.6.post2": "v054",
    "0.5.7": "v054",
    "0.5.8": "v054",
    "0.5.8.post1": "v054",
    "0.5.9": "v054",
    "0.5.10": "v0510",
    "0.5.10.post1": "v0510",
    "0.5.11": "v0510",
    "0.5.12": "v0510",
    "0.5.12.post1": "v0510",
    "0.5.13": "v0510",
    "0.5.13.post1": "v0510",
    "0.5.14": "v0514",
    "0.5.15": "v0514",
    "0.5.15.post1": "v0514",
    "0.5.16": "v0514",
    "0.5.17": "v0517",
    "0.5.18": "v0518",
    "0.5.19": "v0519",
    "0.5.20": "v0519",
    "0.5.21": "v0519",
    "0.5.22": "v0519",
    "0.5.23": "v0519",
}

# the SGLang release that the doctor demo (``nox -s demo``) and the benchmarks use by default
DEFAULT_VERSION = "0.5.2"

# Environment variable that forces a family for a version not in the table (tested or not).
FORCE_FAMILY_ENV = "SGLANG_ROLL_COMPAT_FORCE_FAMILY"
