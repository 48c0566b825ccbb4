"""The REST API: one router per resource; handlers parse, call the service layer and return its answer."""
