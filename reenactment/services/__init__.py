"""Render-job services (writes). Entry points for APIs, tasks and governance hooks."""
