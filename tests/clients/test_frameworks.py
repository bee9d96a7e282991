"""Agent frameworks, unmodified, against the simulator through the gateway: langchain-openai
(structured output, bind_tools), openai-agents (a function tool on both its Chat Completions and
Responses models), pydantic-ai (a tool and structured output). Each run is metered in the ledger."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from tests.conftest import wait_for_ledger


class Weather(BaseModel):
    city: str
    temperature_c: float
    summary: str


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"{city}: 21 C, clear skies"


def test_langchain_structured_output_and_bind_tools(gateway, sim_tenant, settings):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="sim/gpt-4o-mini", base_url=gateway.base_url, api_key=sim_tenant.api_key, max_retries=0)
    weather = llm.with_structured_output(Weather).invoke("What is the weather in Paris?")
    assert isinstance(weather, Weather)
    message = llm.bind_tools([get_weather]).invoke("What is the weather in Paris?")
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    assert len(wait_for_ledger(settings, sim_tenant.workspace, 2)) == 2


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_openai_agents_function_tool(gateway, sim_tenant, settings, api):
    import openai
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=sim_tenant.api_key, max_retries=0)
    model_class = OpenAIChatCompletionsModel if api == "chat_completions" else OpenAIResponsesModel
    agent = Agent(name="forecaster", instructions="Answer weather questions with the tool.",
                  tools=[function_tool(get_weather)], model=model_class(model="sim/gpt-4o-mini", openai_client=client))

    async def run():
        try:
            return await Runner.run(agent, "What is the weather in Paris?")
        finally:
            await client.close()

    result = asyncio.run(run())
    assert "Paris: 21 C, clear skies" in result.final_output  # the tool ran, and its result reached the answer
    records = wait_for_ledger(settings, sim_tenant.workspace, 2)
    assert len(records) == 2 and all(r["outcome"] == "ok" and r["cost_micros"] > 0 for r in records)


def test_pydantic_ai_tool_and_structured_output(gateway, sim_tenant, settings):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("sim/gpt-4o-mini",
                            provider=OpenAIProvider(base_url=gateway.base_url, api_key=sim_tenant.api_key))
    agent = Agent(model, output_type=Weather, instructions="Use the tools.")
    calls: list[str] = []

    @agent.tool_plain
    def weather_lookup(city: str) -> str:
        """Look up the current weather for a city."""
        calls.append(city)
        return get_weather(city)

    result = agent.run_sync("What is the weather in Paris?")
    assert calls == ["Paris"]
    assert isinstance(result.output, Weather)
    assert len(wait_for_ledger(settings, sim_tenant.workspace, 2)) == 2
