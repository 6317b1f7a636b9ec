// Unit tests per part of the Jinja library: values, lexer, parser, renderer, builtins.
#include "gtest/gtest.h"
#include "server/tokenizer/jinja/lexer.h"
#include "server/tokenizer/jinja/parser.h"
#include "server/tokenizer/jinja/template.h"
#include "server/tokenizer/jinja/value.h"

namespace attnscope::jinja {
namespace {

std::string Render(const std::string& source,
                   std::vector<std::pair<std::string, Value>> globals = {}) {
  auto parsed = Template::Parse(source);
  if (!parsed.ok()) return "PARSE ERROR: " + std::string(parsed.status().message());
  RenderOptions options;
  options.now.tm_year = 125;
  options.now.tm_mon = 0;
  options.now.tm_mday = 15;
  options.now.tm_hour = 9;
  options.now.tm_min = 30;
  auto out = parsed->Render(std::move(globals), options);
  if (!out.ok()) return "ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(JinjaValue, FloatReprIsPythonsShortestRoundTrip) {
  EXPECT_EQ(FloatRepr(0.1), "0.1");
  EXPECT_EQ(FloatRepr(1e20), "1e+20");
  EXPECT_EQ(FloatRepr(1e16), "1e+16");
  EXPECT_EQ(FloatRepr(1e15), "1000000000000000.0");
  EXPECT_EQ(FloatRepr(0.0001), "0.0001");
  EXPECT_EQ(FloatRepr(0.00001), "1e-05");
  EXPECT_EQ(FloatRepr(5e-324), "5e-324");  // a subnormal prints without an exception
  EXPECT_EQ(FloatRepr(-2.5), "-2.5");
  EXPECT_EQ(FloatRepr(3.0), "3.0");
}

TEST(JinjaValue, ReprOfContainersIsPythons) {
  EXPECT_EQ(
      Repr(Value::MakeList({Value::Str("a'b"), Value::Int(1), Value::None(), Value::Bool(true)})),
      "[\"a'b\", 1, None, True]");
  EXPECT_EQ(Repr(Value::MakeList({Value::Int(1)}, true)), "(1,)");
}

TEST(JinjaLexer, DropsOneTrailingNewlineAndNormalisesNewlines) {
  auto chunks = SplitTemplate("a\r\nb\n\n");
  ASSERT_TRUE(chunks.ok());
  ASSERT_EQ(chunks->size(), 1u);
  EXPECT_EQ((*chunks)[0].text, "a\nb\n");
}

TEST(JinjaLexer, NumbersWithExponentsAndUnderscores) {
  auto tokens = LexExpression("1e20 1_000 0x1F 2.5E-3");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ((*tokens)[0].kind, Token::Kind::kFloat);
  EXPECT_EQ((*tokens)[0].real, 1e20);
  EXPECT_EQ((*tokens)[1].integer, 1000);
  EXPECT_EQ((*tokens)[2].integer, 31);
  EXPECT_DOUBLE_EQ((*tokens)[3].real, 2.5e-3);
  EXPECT_FALSE(LexExpression("99999999999999999999").ok());  // refused, not wrapped
}

TEST(JinjaParser, PrecedenceAsJinja2) {
  EXPECT_EQ(Render("{{ 2 * 3 ** 2 }}"), "18");
  EXPECT_EQ(Render("{{ -2 ** 2 }}"), "4");     // Jinja2 binds unary minus tighter than **
  EXPECT_EQ(Render("{{ 1 ~ 2 * 3 }}"), "16");  // * binds tighter than ~
  EXPECT_EQ(Render("{{ not 1 == 2 }}"), "True");
  EXPECT_EQ(Render("{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}"), "TrueFalse");
  EXPECT_FALSE(ParseExpression("1 +").ok());
}

TEST(JinjaRenderer, MacrosSetBlocksTuplesNamespaces) {
  EXPECT_EQ(
      Render(
          "{% macro m(a, b=a ~ '!') %}[{{ a }}{{ b }}]{% endmacro %}{{ m('x') }}{{ m(1, b=2) }}"),
      "[xx!][12]");
  EXPECT_EQ(
      Render("{% set x %}a{{ 1 + 1 }}{% endset %}{{ x }}|{% set y | upper %}b{% endset %}{{ y }}"),
      "a2|B");
  EXPECT_EQ(Render("{% set a, b = 1, 2 %}{{ b }}{{ a }}{% for k, v in {'p': 1}.items() %}{{ k }}{{ "
                   "v }}{% endfor %}"),
            "21p1");
  EXPECT_EQ(Render("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i "
                   "%}{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(Render("{% generation %}g{% endgeneration %}"), "g");
  EXPECT_EQ(Render("{% for x in 'ab' %}{{ loop.cycle('o', 'e') }}{{ loop.revindex }}{% endfor %}"),
            "o2e1");
}

TEST(JinjaRenderer, UndefinedRaisesWhereJinja2Does) {
  EXPECT_EQ(Render("[{{ nothing }}]{{ nothing | length }}{{ nothing is defined }}"), "[]0False");
  EXPECT_NE(Render("{{ nothing.attr }}").find("undefined"), std::string::npos);
  EXPECT_NE(Render("{{ nothing[0] }}").find("undefined"), std::string::npos);
  EXPECT_NE(Render("{{ nothing + 1 }}").find("undefined"), std::string::npos);
  EXPECT_EQ(Render("{{ none | selectattr('x') | list }}"), "[]");
  EXPECT_EQ(Render("{{ none.attr is defined }}"), "False");  // getattr on None is undefined
}

TEST(JinjaBuiltins, StringMethodsHavePythonSemantics) {
  EXPECT_EQ(Render("{{ 'a,b,c'.split(',', 1) }}"), "['a', 'b,c']");
  EXPECT_EQ(Render("{{ '  a  b '.split() }}{{ 'a b c'.rsplit(' ', 1) }}"),
            "['a', 'b']['a b', 'c']");
  EXPECT_EQ(Render("{{ 'xhix'.strip('x') }}{{ 'ab'.startswith(('z', 'a')) }}"), "hiTrue");
  EXPECT_EQ(Render("{{ 'hello world'.title() }}{{ '{} {x}'.format(1, x=2) }}"), "Hello World1 2");
  EXPECT_EQ(Render("{{ '%s-%03d' | format('a', 7) }}"), "a-007");
}

TEST(JinjaBuiltins, FiltersAndGenerators) {
  EXPECT_EQ(
      Render("{{ [1, 2, 3] | reject('odd') | list }}{{ [1, 2] | map('string') | join('+') }}"),
      "[2]1+2");
  EXPECT_EQ(Render("{{ [] | select }}"), "<generator object>");
  EXPECT_EQ(Render("{% if [] | select %}t{% endif %}"), "t");  // a generator is always true
  EXPECT_EQ(Render("{{ {'b': 1, 'a': 2} | dictsort }}"), "[('a', 2), ('b', 1)]");
  EXPECT_EQ(Render("{{ {'a': 'é', 'n': [1, 2.5, none]} | tojson(indent=2) }}"),
            "{\n  \"a\": \"é\",\n  \"n\": [\n    1,\n    2.5,\n    null\n  ]\n}");
  EXPECT_EQ(Render("{{ dict(a=1, b=[]) | tojson }}"), "{\"a\": 1, \"b\": []}");
  EXPECT_EQ(Render("{{ strftime_now('%d %b %Y') }}"), "15 Jan 2025");
  EXPECT_NE(Render("{{ x | nosuchfilter }}").find("no filter named 'nosuchfilter'"),
            std::string::npos);
  EXPECT_EQ(Render("{% if false %}{{ x | nosuchfilter }}{% endif %}ok"), "ok");
}

TEST(JinjaBounds, EveryValueIsBounded) {
  EXPECT_NE(Render("{{ 'ab' * 4611686018427387904 }}").find("limit"), std::string::npos);
  EXPECT_NE(
      Render("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
             "{% endfor %}{{ ns.s | length }}")
          .find("limit"),
      std::string::npos);
  EXPECT_NE(Render("{{ ('a' * 1000000) | replace('a', "
                   "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                   "aaaaaaaaaaaaaaaaaaaaaaa') }}")
                .find("limit"),
            std::string::npos);
  EXPECT_NE(Render("{{ 9223372036854775807 + 1 }}").find("overflow"), std::string::npos);
  EXPECT_NE(Render("{{ 3 ** 64 }}").find("overflow"), std::string::npos);
  EXPECT_EQ(Render("{{ 2.0 ** -1074 }}"), "5e-324");
  EXPECT_NE(Render("{{ range(1000000) | length }}").find("range"), std::string::npos);
  EXPECT_NE(Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("depth"),
            std::string::npos);
}

}  // namespace
}  // namespace attnscope::jinja
