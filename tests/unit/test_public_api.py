import types

import inferbridge


def test_all_names_exist_and_are_sorted() -> None:
    assert sorted(inferbridge.__all__) == inferbridge.__all__
    for name in inferbridge.__all__:
        assert hasattr(inferbridge, name), name


def test_public_api_is_exactly_all() -> None:
    # Submodules become attributes of the package once imported; they are not the API.
    public = {
        name
        for name in dir(inferbridge)
        if not name.startswith("_")
        and not isinstance(getattr(inferbridge, name), types.ModuleType)
    }
    assert public == set(inferbridge.__all__) - {"__version__"}
