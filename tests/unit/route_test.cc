#include "agent/spans/route.h"

#include <gtest/gtest.h>

#include <string>

namespace flowtracer::spans {
namespace {

TEST(PathOfTest, OriginFormDropsQueryAndFragment) {
  EXPECT_EQ(PathOf("/a/b?x=1"), "/a/b");
  EXPECT_EQ(PathOf("/a/b#top"), "/a/b");
  EXPECT_EQ(PathOf("/a/b?x=1#top"), "/a/b");
  EXPECT_EQ(PathOf("/a/b#top?x=1"), "/a/b");
  EXPECT_EQ(PathOf("/"), "/");
  EXPECT_EQ(PathOf("/?x=1"), "/");
  EXPECT_EQ(PathOf("?x=1"), "");
  EXPECT_EQ(PathOf(""), "");
}

TEST(PathOfTest, AbsoluteForm) {
  EXPECT_EQ(PathOf("http://h:1/a?x"), "/a");
  EXPECT_EQ(PathOf("http://example.com:8080/users/42?q=1#f"), "/users/42");
  EXPECT_EQ(PathOf("HTTPS://Example.com/a/b/"), "/a/b/");
  EXPECT_EQ(PathOf("http://user@host/p"), "/p");
  EXPECT_EQ(PathOf("svn+ssh://host/repo"), "/repo");
}

TEST(PathOfTest, AbsoluteFormWithoutPathIsRoot) {
  EXPECT_EQ(PathOf("http://host"), "/");
  EXPECT_EQ(PathOf("http://host:8080"), "/");
  EXPECT_EQ(PathOf("http://host?q=1"), "/");
  EXPECT_EQ(PathOf("http://host#frag"), "/");
}

TEST(PathOfTest, AsteriskAndAuthorityFormStayAsSent) {
  EXPECT_EQ(PathOf("*"), "*");
  EXPECT_EQ(PathOf("example.com:443"), "example.com:443");
  EXPECT_EQ(PathOf("10.0.0.1:8443"), "10.0.0.1:8443");
}

TEST(PathOfTest, NetworkPathIsOriginForm) {
  // "//host/x" is not absolute-form (no scheme): it is a path with an empty first segment.
  EXPECT_EQ(PathOf("//host/x?y"), "//host/x");
}

TEST(TemplatePathTest, HeaderExample) {
  EXPECT_EQ(TemplatePath("/users/123/orders/9f1c2b3a4d5e6f708192a3b4c5d6e7f8?x=1"),
            "/users/{id}/orders/{id}");
}

TEST(TemplatePathTest, DigitSegments) {
  EXPECT_EQ(TemplatePath("/users/42"), "/users/{id}");
  EXPECT_EQ(TemplatePath("/users/0/posts/0007"), "/users/{id}/posts/{id}");
  EXPECT_EQ(TemplatePath("/2024/01/15/report"), "/{id}/{id}/{id}/report");
}

TEST(TemplatePathTest, Uuids) {
  EXPECT_EQ(TemplatePath("/orders/123e4567-e89b-12d3-a456-426614174000"), "/orders/{id}");
  EXPECT_EQ(TemplatePath("/orders/123E4567-E89B-12D3-A456-426614174000/items"),
            "/orders/{id}/items");
  // Without digits only the UUID rule applies; a non-hex letter breaks it.
  EXPECT_EQ(TemplatePath("/x/abcdefab-cdef-abcd-efab-cdefabcdefab"), "/x/{id}");
  EXPECT_EQ(TemplatePath("/x/abcdefab-cdef-abcd-efab-cdefabcdefag"),
            "/x/abcdefab-cdef-abcd-efab-cdefabcdefag");
  // A malformed UUID with digits is still a long mixed token.
  EXPECT_EQ(TemplatePath("/x/123e4567-e89b-12d3-a456-42661417400"), "/x/{id}");
}

TEST(TemplatePathTest, LongHex) {
  EXPECT_EQ(TemplatePath("/blobs/0123456789abcdef"), "/blobs/{id}");
  EXPECT_EQ(TemplatePath("/blobs/DEADBEEFDEADBEEF"), "/blobs/{id}");
  EXPECT_EQ(TemplatePath("/commits/da39a3ee5e6b4b0d3255bfef95601890afd80709"), "/commits/{id}");
  // Fifteen hex characters are too short to be sure.
  EXPECT_EQ(TemplatePath("/blobs/0123456789abcde"), "/blobs/0123456789abcde");
  EXPECT_EQ(TemplatePath("/cafe/deadbeef"), "/cafe/deadbeef");
}

TEST(TemplatePathTest, LongMixedTokens) {
  EXPECT_EQ(TemplatePath("/s/aGVsbG8gd29ybGQ1234-_x"), "/s/{id}");
  EXPECT_EQ(TemplatePath("/invites/Xk9fQ2mZr7Lp0aBcDeFg"), "/invites/{id}");  // 20 chars
  // 19 characters, only letters, or characters outside base64url: kept.
  EXPECT_EQ(TemplatePath("/invites/Xk9fQ2mZr7Lp0aBcDeF"), "/invites/Xk9fQ2mZr7Lp0aBcDeF");
  EXPECT_EQ(TemplatePath("/docs/internationalization-guide"), "/docs/internationalization-guide");
  EXPECT_EQ(TemplatePath("/files/report2024final.version.pdf"),
            "/files/report2024final.version.pdf");
}

TEST(TemplatePathTest, WordsStay) {
  EXPECT_EQ(TemplatePath("/api/v1/users/health"), "/api/v1/users/health");
  EXPECT_EQ(TemplatePath("/auth/2fa/setup"), "/auth/2fa/setup");
  EXPECT_EQ(TemplatePath("/v2/oauth2/token"), "/v2/oauth2/token");
  EXPECT_EQ(TemplatePath("/users/u123"), "/users/u123");
  EXPECT_EQ(TemplatePath("/items/{id}"), "/items/{id}");
}

TEST(TemplatePathTest, EmptyBecomesRoot) {
  EXPECT_EQ(TemplatePath(""), "/");
  EXPECT_EQ(TemplatePath("?x=1"), "/");
  EXPECT_EQ(TemplatePath("#frag"), "/");
  EXPECT_EQ(TemplatePath("/"), "/");
  EXPECT_EQ(TemplatePath("http://host"), "/");
}

TEST(TemplatePathTest, SlashesAreNotCollapsed) {
  EXPECT_EQ(TemplatePath("/users//42/"), "/users//{id}/");
  EXPECT_EQ(TemplatePath("//42"), "//{id}");
  EXPECT_EQ(TemplatePath("/users/42/"), "/users/{id}/");
}

TEST(TemplatePathTest, PercentEncodingIsKeptAsSent) {
  EXPECT_EQ(TemplatePath("/files/my%20file/42"), "/files/my%20file/{id}");
  EXPECT_EQ(TemplatePath("/tags/%E2%9C%93"), "/tags/%E2%9C%93");
  // "%34%32" decodes to "42", but we template what was sent.
  EXPECT_EQ(TemplatePath("/users/%34%32"), "/users/%34%32");
}

TEST(TemplatePathTest, OtherRequestTargetForms) {
  EXPECT_EQ(TemplatePath("http://api.example.com:8080/users/42?x=1"), "/users/{id}");
  EXPECT_EQ(TemplatePath("*"), "*");
  EXPECT_EQ(TemplatePath("example.com:443"), "example.com:443");
}

TEST(RouteLimiterTest, AdmitsUpToTheCapThenOverflows) {
  RouteLimiter limiter(2);
  EXPECT_EQ(limiter.Admit("billing", "/a"), "/a");
  EXPECT_EQ(limiter.Admit("billing", "/b"), "/b");
  EXPECT_EQ(limiter.Admit("billing", "/c"), "{overflow}");
  EXPECT_EQ(limiter.Admit("billing", "/d"), RouteLimiter::kOverflowRoute);
  EXPECT_EQ(limiter.overflow_count(), 2u);
}

TEST(RouteLimiterTest, KnownRoutesStayAdmittedAtTheCap) {
  RouteLimiter limiter(2);
  limiter.Admit("billing", "/a");
  limiter.Admit("billing", "/b");
  EXPECT_EQ(limiter.Admit("billing", "/a"), "/a");
  EXPECT_EQ(limiter.Admit("billing", "/b"), "/b");
  EXPECT_EQ(limiter.overflow_count(), 0u);
}

// More services than the limiter remembers as recent, interleaved, each repeating its
// routes: the caps and the admitted routes are the same as for one service alone.
TEST(RouteLimiterTest, ManyInterleavedServicesKeepTheirOwnRoutesAndCaps) {
  RouteLimiter limiter(2);
  for (int round = 0; round < 3; ++round) {
    for (int service = 0; service < 9; ++service) {
      const std::string name = "service-" + std::to_string(service);
      const std::string a = "/a/" + std::to_string(service), b = "/b/" + std::to_string(service);
      EXPECT_EQ(limiter.Admit(name, a), a);
      EXPECT_EQ(limiter.Admit(name, a), a);
      EXPECT_EQ(limiter.Admit(name, b), b);
      EXPECT_EQ(limiter.Admit(name, "/c"), "{overflow}");
      EXPECT_EQ(limiter.Admit(name, b), b);
    }
  }
  EXPECT_EQ(limiter.overflow_count(), 27u);
}

TEST(RouteLimiterTest, CapIsPerService) {
  RouteLimiter limiter(1);
  EXPECT_EQ(limiter.Admit("billing", "/a"), "/a");
  EXPECT_EQ(limiter.Admit("gateway", "/b"), "/b");
  EXPECT_EQ(limiter.Admit("billing", "/b"), "{overflow}");
  EXPECT_EQ(limiter.Admit("gateway", "/a"), "{overflow}");
  EXPECT_EQ(limiter.overflow_count(), 2u);
}

TEST(RouteLimiterTest, ZeroCapOverflowsEverything) {
  RouteLimiter limiter(0);
  EXPECT_EQ(limiter.Admit("billing", "/a"), "{overflow}");
  EXPECT_EQ(limiter.overflow_count(), 1u);
}

TEST(RouteLimiterTest, DefaultCapIs200) {
  RouteLimiter limiter;
  for (int i = 0; i < 200; ++i) {
    const std::string route = "/r" + std::to_string(i);
    ASSERT_EQ(limiter.Admit("billing", route), route);
  }
  EXPECT_EQ(limiter.Admit("billing", "/r200"), "{overflow}");
  EXPECT_EQ(limiter.overflow_count(), 1u);
}

TEST(RouteLimiterTest, ServicesBeyondTenThousandOverflow) {
  RouteLimiter limiter(1);
  for (int i = 0; i < 10000; ++i) {
    ASSERT_EQ(limiter.Admit("svc" + std::to_string(i), "/a"), "/a");
  }
  EXPECT_EQ(limiter.Admit("svc10000", "/a"), "{overflow}");
  EXPECT_EQ(limiter.Admit("svc10001", "/b"), "{overflow}");
  // Services already tracked keep working.
  EXPECT_EQ(limiter.Admit("svc0", "/a"), "/a");
  EXPECT_EQ(limiter.Admit("svc9999", "/a"), "/a");
  EXPECT_EQ(limiter.overflow_count(), 2u);
}

}  // namespace
}  // namespace flowtracer::spans
