"""The Textual dashboard. Reads the store, starts and signals trainer processes; never imports torch.

Entry point: `rrdtui.tui.app.run_app(runs_dir, presets_dir)`.
"""
