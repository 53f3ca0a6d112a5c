from rest_framework.routers import DefaultRouter

from .views import ComradeFullViewSet, EligibleMemberViewSet

router = DefaultRouter(trailing_slash=True)
router.register("api/members/eligible", EligibleMemberViewSet, basename="eligible")
router.register("felagar/api/full", ComradeFullViewSet, basename="full")

urlpatterns = router.urls
