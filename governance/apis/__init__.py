"""The governance REST API: one ``<Entity><Action>Api`` class per operation (HackSoft), each
parsing input, authorizing, calling one selector or service and serializing the result."""
