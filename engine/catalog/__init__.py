"""The catalog: templates and their typed params, rendering, the engine compatibility check, model
files and their synthetic stand-ins, and the workflow importer."""
