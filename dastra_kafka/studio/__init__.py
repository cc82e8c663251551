"""The studio: recipes built, checked, tested and stored over HTTP (`dastra-kafka studio`).

`app.py` serves the API (`create_app`), `store.py` writes and reads the studio's recipe versions
(`StudioStore`), `settings.py` holds STUDIO_* (`StudioSettings`). The package itself imports
nothing, so reading the settings does not load the web app.
"""
