import inferbridge


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(inferbridge.__all__) == inferbridge.__all__
    for name in inferbridge.__all__:
        assert hasattr(inferbridge, name), name


def test_public_api_is_exactly_this() -> None:
    public = {n for n in dir(inferbridge) if not n.startswith("_")} - {
        # subpackages appear as attributes once imported
        "cli",
        "dataplane",
        "errors",
        "examples",
        "frontends",
        "protocol",
        "repository",
        "runtimes",
        "server",
        "settings",
    }
    assert public == set(inferbridge.__all__) - {"__version__"}
