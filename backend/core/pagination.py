from typing import Any

from django.db.models import QuerySet
from rest_framework import pagination, serializers
from rest_framework.request import Request

MAX_PAGE_SIZE = 200


class _PageQuery(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, required=False)
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, required=False)


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's page numbers, but a malformed `page` or `page_size` is a 400 with the field's message.

    DRF silently ignores a bad `page_size` (`?page_size=abc` gives 50 results) and answers a bad `page`
    with 404 "Invalid page": bad input is 400 everywhere else in this API. A page past the last one
    stays 404.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: Any = None) -> list | None:
        # A plain dict, not the QueryDict: DRF would take an empty `?page=` for an absent one.
        given = {
            name: request.query_params[name] for name in ("page", "page_size") if name in request.query_params
        }
        _PageQuery(data=given).is_valid(raise_exception=True)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {"page": {"minimum": 1}, "page_size": {"minimum": 1, "maximum": MAX_PAGE_SIZE}}
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters
