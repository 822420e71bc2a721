"""The web demo: one video, one or more questions, one or two compression settings side by side, in a browser.

`python -m llava.demo --model CKPT` (or `bash scripts/demo.sh`) starts a Gradio app on 127.0.0.1. The app only
composes the runtime's and the model's stages (`llava.runtime`, `visual_inputs` -> `compress_features` ->
`generate`); the video is decoded and run through the vision tower once (with whatever extra inputs the compared
methods need), and each setting is its own compression call on the same pooled features.

    inputs.py   the form's values -> a validated `DemoRequest` (or a `DemoInputError` naming the bad field)
    engine.py   a loaded model + the run config; `DemoEngine.run(request)` yields progress snapshots
    picture.py  frames + assignment -> painted frames (kept / merged tokens coloured, dropped patches dark)
    render.py   snapshots -> the page's text and HTML (pure functions)
    app.py      the Gradio page: components, events, serialised requests
    __main__.py the command line: flags -> run config -> load -> launch
"""
